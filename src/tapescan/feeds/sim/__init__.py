"""feeds/sim"""
