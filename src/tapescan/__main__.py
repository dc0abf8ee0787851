from tapescan.cli import main

main()
