// tapescan web page: live scan panels over the /ws protocol (docs/protocol.md), a symbol side
// panel, per-scan alerts and a scan builder. Plain ES module, no build step, no dependencies.

const API = "/api/v1";
const STORE = {
  layout: "tapescan.layout.v1",
  token: "tapescan.adminToken",
  settings: "tapescan.settings.v1",
};
const STALE_AFTER_MS = 5000; // no status/delta for longer than this: the data is stale
const CONNECT_GRACE_MS = 2000; // do not warn while the very first connection is being made
const FLASH_MS = 1200;
const ENTER_MS = 3000;
const RESYNC_RETRY_MS = 5000;
const ENRICH_TTL_MS = 5000; // columns that a scan does not stream are refreshed this often
const ENRICH_CONCURRENCY = 4;
const ENRICH_ROWS = 60;
const SYMBOL_REFRESH_MS = 2000;
const HISTORY_POINTS = 2000; // per symbol, for the fallback chart
// The symbol chart: today's 1-minute bars (a session has at most 960 minutes, 04:00-20:00 ET),
// read page by page and then kept current while the panel is open.
const BARS_PAGE = 1000; // the API's largest page
const BARS_MAX = 1000; // bars held for the symbol shown
const BARS_MAX_PAGES = 3; // pages followed in one load (a day needs one)
const BARS_POLL_MS = 15_000;
// Bounds for a page left open all day: at most this many symbols each in the price history,
// the per-symbol column cache and the alert cooldowns (oldest dropped first).
const HISTORY_SYMBOLS = 1000; // x 2,000 points x 2 numbers: ~32 MB at worst
const ENRICH_SYMBOLS = 2000;
const ALERT_KEYS = 5000;

function capMap(map, capacity) {
  // A Map iterates in insertion order: the first keys are the oldest.
  for (const key of map.keys()) {
    if (map.size <= capacity) break;
    map.delete(key);
  }
}
const DEFAULT_PANELS = [
  "top_gainers",
  "gappers_up",
  "high_rvol",
  "top_losers",
  "momentum_up",
  "volume_spikes",
];
const OPS = [">", ">=", "<", "<=", "==", "!=", "between", "in"];

// ---------------------------------------------------------------------------------------------
// small helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (selector, root = document) => root.querySelector(selector);
const byTestId = (id, root = document) => root.querySelector(`[data-testid="${CSS.escape(id)}"]`);

function loadJson(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

function saveJson(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // storage full or disabled: the page still works for this visit
  }
}

const ICONS = {
  bell: "M12 3a5 5 0 0 0-5 5v3.5L5 15v1h14v-1l-2-3.5V8a5 5 0 0 0-5-5zm-2 14a2 2 0 0 0 4 0z",
  "bell-off":
    "M12 3a5 5 0 0 0-5 5v3.5L5 15v1h11.2L4.6 4.4 3.5 5.5l15 15 1.1-1.1L17 16.8V16h2v-1l-2-3.5V8a5 5 0 0 0-5-5zm-2 14a2 2 0 0 0 4 0z",
};

function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", `icon icon-${name}`);
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

function restartClass(node, cls, ms) {
  node.classList.remove(cls);
  void node.offsetWidth; // restart the CSS animation
  node.classList.add(cls);
  clearTimeout(node._timers?.[cls]);
  node._timers = node._timers ?? {};
  node._timers[cls] = setTimeout(() => node.classList.remove(cls), ms);
}

// ---------------------------------------------------------------------------------------------
// REST

async function api(path, { method = "GET", body, token, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`${API}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    signal,
  });
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: text };
    }
  }
  return { status: response.status, ok: response.ok, data };
}

function itemsOf(data, keys) {
  if (Array.isArray(data)) return data;
  if (data && typeof data === "object") {
    for (const key of keys) if (Array.isArray(data[key])) return data[key];
    const arrays = Object.values(data).filter(Array.isArray);
    if (arrays.length === 1) return arrays[0];
  }
  return [];
}

/** Every item of a paginated list (follows next_cursor). */
async function listAll(path, keys) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < 50; page += 1) {
    const sep = path.includes("?") ? "&" : "?";
    const query = `${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const { ok, status, data } = await api(`${path}${query}`);
    if (!ok) throw new Error(`GET ${API}${path} answered ${status}`);
    items.push(...itemsOf(data, keys));
    cursor = data && !Array.isArray(data) ? data.next_cursor : null;
    if (!cursor) break;
  }
  return items;
}

// ---------------------------------------------------------------------------------------------
// columns: kinds, labels, formatting

const catalog = new Map(); // name -> {name, kind, description}

const LABELS = {
  symbol: "Symbol",
  name: "Name",
  exchange: "Exch",
  sector: "Sector",
  price: "Price",
  prev_close: "Prev close",
  change_pct: "Chg %",
  abs_change_pct: "|Chg| %",
  gap_pct: "Gap %",
  abs_gap_pct: "|Gap| %",
  open: "Open",
  change_from_open_pct: "From open %",
  reversal_pct: "Reversal %",
  close: "Close",
  post_change_pct: "AH chg %",
  abs_post_change_pct: "|AH chg| %",
  volume: "Volume",
  dollar_volume: "$ Volume",
  vwap: "VWAP",
  from_vwap_pct: "From VWAP %",
  hod: "HOD",
  lod: "LOD",
  from_hod_pct: "From HOD %",
  from_lod_pct: "From LOD %",
  pm_high: "PM high",
  pm_low: "PM low",
  atr: "ATR",
  atr_pct: "ATR %",
  range_atr_pct: "Range/ATR %",
  rvol: "RVOL",
  chg_1m_pct: "1m %",
  chg_5m_pct: "5m %",
  chg_15m_pct: "15m %",
  vol_1m: "Vol 1m",
  vol_spike: "Vol spike",
  avg_volume_20d: "Avg vol 20d",
  float_shares: "Float",
  market_cap: "Mkt cap",
  halted: "Halt",
  luld_upper: "LULD up",
  luld_lower: "LULD down",
};
const SIGNED = new Set([
  "change_pct",
  "gap_pct",
  "change_from_open_pct",
  "reversal_pct",
  "post_change_pct",
  "from_vwap_pct",
  "chg_1m_pct",
  "chg_5m_pct",
  "chg_15m_pct",
]);

function label(name) {
  return LABELS[name] ?? name.replace(/_pct$/, " %").replaceAll("_", " ");
}

function kindOf(name) {
  return catalog.get(name)?.kind ?? (name === "symbol" ? "text" : "ratio");
}

const numberFormats = new Map();
function fixed(value, digits) {
  let format = numberFormats.get(digits);
  if (!format) {
    format = new Intl.NumberFormat("en-US", {
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    });
    numberFormats.set(digits, format);
  }
  return format.format(value);
}

const upTo4 = new Intl.NumberFormat("en-US", {
  minimumFractionDigits: 2,
  maximumFractionDigits: 4,
});

function compact(value) {
  const abs = Math.abs(value);
  if (abs >= 1e12) return `${fixed(value / 1e12, 2)}T`;
  if (abs >= 1e9) return `${fixed(value / 1e9, 2)}B`;
  if (abs >= 1e6) return `${fixed(value / 1e6, 2)}M`;
  if (abs >= 1e4) return `${fixed(value / 1e3, 1)}K`;
  return fixed(value, 0);
}

/** Display text and a tone (pos/neg/nil/flag) of one value; full=true keeps more precision. */
function formatValue(name, value, full = false) {
  if (value === null || value === undefined || (typeof value === "number" && !isFinite(value))) {
    return { text: "—", tone: "nil" };
  }
  const kind = kindOf(name);
  if (typeof value === "boolean" || kind === "flag") {
    const on = value === true || value === "true";
    if (name === "halted") return { text: on ? "HALTED" : "—", tone: on ? "flag" : "nil" };
    return { text: on ? "yes" : "no", tone: on ? "flag" : "nil" };
  }
  if (typeof value !== "number") return { text: String(value), tone: "" };
  switch (kind) {
    case "price":
      if (Math.abs(value) < 1) return { text: fixed(value, 4), tone: "" };
      return { text: full ? upTo4.format(value) : fixed(value, 2), tone: "" };
    case "percent": {
      const tone = SIGNED.has(name) ? (value > 0 ? "pos" : value < 0 ? "neg" : "") : "";
      const sign = SIGNED.has(name) && value > 0 ? "+" : "";
      return { text: `${sign}${fixed(value, full ? 3 : 2)}`, tone };
    }
    case "count":
      return { text: full ? fixed(value, 0) : compact(value), tone: "" };
    case "ratio":
      return { text: fixed(value, full ? 3 : 2), tone: "" };
    default:
      return { text: String(value), tone: "" };
  }
}

function compareValues(a, b) {
  const aNil = a === null || a === undefined;
  const bNil = b === null || b === undefined;
  if (aNil || bNil) return aNil && bNil ? 0 : aNil ? 1 : -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (typeof a === "boolean" && typeof b === "boolean") return Number(a) - Number(b);
  return String(a).localeCompare(String(b));
}

// ---------------------------------------------------------------------------------------------
// market clock (ET), anchored on the server's `asof` and extrapolated at the clock's speed

const etTime = new Intl.DateTimeFormat("en-US", {
  timeZone: "America/New_York",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});
const etShortTime = new Intl.DateTimeFormat("en-US", {
  timeZone: "America/New_York",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});
const etDate = new Intl.DateTimeFormat("en-US", {
  timeZone: "America/New_York",
  weekday: "short",
  month: "short",
  day: "numeric",
  year: "numeric",
});

const clock = { marketMs: null, perfMs: 0, speed: 1, maxSpeed: false };

function anchorClock(iso) {
  const ms = Date.parse(iso);
  if (!Number.isFinite(ms) || ms <= 0) return; // a scan not yet run has no instant (epoch)
  // frames can arrive out of order; only a big step back (a restarted server) moves back
  if (clock.marketMs !== null && ms < clock.marketMs && clock.marketMs - ms < 60_000) return;
  clock.marketMs = ms;
  clock.perfMs = performance.now();
}

function marketNow() {
  if (clock.marketMs === null) return Date.now();
  if (clock.maxSpeed) return clock.marketMs;
  return clock.marketMs + (performance.now() - clock.perfMs) * clock.speed;
}

async function loadClockSpeed() {
  try {
    const { data } = await api("/health");
    const speed = data?.clock?.speed;
    clock.maxSpeed = speed === null;
    clock.speed = typeof speed === "number" && speed > 0 ? speed : 1;
    if (data?.clock?.now) anchorClock(data.clock.now);
    const badge = byTestId("clock-speed");
    badge.hidden = !clock.maxSpeed && clock.speed === 1;
    badge.textContent = clock.maxSpeed ? "REPLAY max" : `SIM ${clock.speed}×`;
    badge.title = "The server's clock is simulated: market time runs at this speed";
  } catch {
    // health is optional for the page; the clock then anchors on the first frame
  }
}

// ---------------------------------------------------------------------------------------------
// settings

const settings = Object.assign({ cooldownS: 60, volume: 0.5 }, loadJson(STORE.settings, {}));

// ---------------------------------------------------------------------------------------------
// price history per symbol (what this page has seen), for the fallback chart

const priceHistory = new Map(); // symbol -> [[ms, price], ...]
const priceListeners = new Set();

function recordPrice(symbol, ms, price) {
  if (typeof price !== "number" || !Number.isFinite(price) || !Number.isFinite(ms)) return;
  let points = priceHistory.get(symbol);
  if (!points) {
    points = [];
    priceHistory.set(symbol, points);
    capMap(priceHistory, HISTORY_SYMBOLS);
  }
  const last = points[points.length - 1];
  if (last && ms < last[0]) return;
  if (last && last[0] === ms) last[1] = price;
  else points.push([ms, price]);
  if (points.length > HISTORY_POINTS) {
    // keep the whole session: thin out the older three quarters, keep the recent tail as is
    const tail = points.length - Math.floor(HISTORY_POINTS / 4);
    const thinned = points.slice(0, tail).filter((_, i) => i % 2 === 0);
    points.splice(0, tail, ...thinned);
  }
  for (const listener of priceListeners) listener(symbol);
}

// ---------------------------------------------------------------------------------------------
// scan feeds: snapshot + deltas, checked by seq / prev_seq

class ScanFeed {
  constructor(id) {
    this.id = id;
    this.seq = null;
    this.columns = null;
    this.rows = new Map(); // symbol -> row array
    this.order = [];
    this.ready = false;
    this.awaitingSince = null; // performance.now() when a resync was requested
    this.asofMs = null;
    this.missing = false;
    this.snapshots = 0;
  }

  /** Replace everything; returns what changed against the rows held before. */
  applySnapshot(message) {
    const before = this.rows;
    const hadData = this.ready;
    const columnsChanged =
      !this.columns || this.columns.join() !== (message.columns ?? []).join();
    this.columns = message.columns ?? [];
    this.rows = new Map();
    for (const row of message.rows ?? []) this.rows.set(String(row[0]), row);
    this.order = [...this.rows.keys()];
    this.seq = message.seq;
    this.ready = true;
    this.missing = false;
    this.awaitingSince = null;
    this.asofMs = Date.parse(message.asof);
    this.snapshots += 1;
    const changes = new Map();
    const entered = [];
    for (const [symbol, row] of this.rows) {
      const old = before.get(symbol);
      if (!old) {
        if (hadData) entered.push(symbol);
      } else if (!columnsChanged) {
        const diff = this.#diff(old, row);
        if (diff.size) changes.set(symbol, diff);
      }
    }
    this.#record(this.rows.values());
    return { full: true, changes, entered, columnsChanged };
  }

  /** Apply a delta; returns null (and the caller resyncs) when it does not follow our seq. */
  applyDelta(message) {
    if (!this.ready || message.prev_seq !== this.seq) return null;
    const changes = new Map();
    const entered = [];
    for (const symbol of message.remove ?? []) this.rows.delete(String(symbol));
    for (const row of message.upsert ?? []) {
      const symbol = String(row[0]);
      const old = this.rows.get(symbol);
      if (old) {
        const diff = this.#diff(old, row);
        if (diff.size) changes.set(symbol, diff);
      } else {
        entered.push(symbol);
      }
      this.rows.set(symbol, row);
    }
    if (Array.isArray(message.order)) {
      this.order = message.order.map(String).filter((s) => this.rows.has(s));
    } else {
      this.order = this.order.filter((s) => this.rows.has(s));
    }
    const placed = new Set(this.order);
    for (const symbol of this.rows.keys()) if (!placed.has(symbol)) this.order.push(symbol);
    this.seq = message.seq;
    this.asofMs = Date.parse(message.asof);
    this.#record(message.upsert ?? []);
    return { full: false, changes, entered, columnsChanged: false };
  }

  value(symbol, column) {
    const index = this.columns ? this.columns.indexOf(column) : -1;
    if (index < 0) return undefined;
    return this.rows.get(symbol)?.[index];
  }

  #diff(old, row) {
    const diff = new Map();
    for (let i = 1; i < row.length; i += 1) {
      const a = old[i];
      const b = row[i];
      if (a === b) continue;
      const direction =
        typeof a === "number" && typeof b === "number" ? (b > a ? "up" : "down") : "change";
      diff.set(this.columns[i], direction);
    }
    return diff;
  }

  #record(rows) {
    const index = this.columns.indexOf("price");
    if (index < 0 || !Number.isFinite(this.asofMs)) return;
    for (const row of rows) recordPrice(String(row[0]), this.asofMs, row[index]);
  }
}

// ---------------------------------------------------------------------------------------------
// the WebSocket connection, with reconnect and backoff

const feeds = new Map(); // scan id -> ScanFeed

const socket = {
  ws: null,
  state: "connecting", // connecting | open | closed
  attempt: 0,
  retryAt: null,
  retryTimer: null,
  openedAt: null,
  lastDataAt: null,
  pageOpenedAt: performance.now(),
  subscribed: new Set(),

  url() {
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  },

  connect() {
    clearTimeout(this.retryTimer);
    this.retryAt = null;
    this.state = "connecting";
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      this.state = "open";
      this.openedAt = performance.now();
      this.subscribed = new Set();
      loadClockSpeed();
      this.syncSubscriptions();
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      handleMessage(message);
    });
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.state = "closed";
      for (const feed of feeds.values()) feed.awaitingSince = null;
      this.scheduleReconnect();
      header.staleCheck();
    });
    ws.addEventListener("error", () => {
      // a close event follows; reconnecting is handled there
    });
  },

  scheduleReconnect() {
    const base = Math.min(15000, 500 * 2 ** this.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    this.retryAt = performance.now() + delay;
    this.retryTimer = setTimeout(() => this.connect(), delay);
  },

  reconnectNow() {
    if (this.state === "open") return;
    this.attempt = 0;
    this.connect();
  },

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  },

  /** Subscribe to every scan on the board and unsubscribe from the rest. */
  syncSubscriptions() {
    if (this.state !== "open") return;
    const wanted = new Set(board.panels.map((p) => p.scanId));
    const add = [...wanted].filter((id) => !this.subscribed.has(id));
    const drop = [...this.subscribed].filter((id) => !wanted.has(id));
    if (drop.length && this.send({ op: "unsubscribe", scans: drop })) {
      for (const id of drop) this.subscribed.delete(id);
    }
    if (add.length && this.send({ op: "subscribe", scans: add })) {
      for (const id of add) this.subscribed.add(id);
    }
  },

  resync(feed) {
    if (this.send({ op: "resync", scan: feed.id })) feed.awaitingSince = performance.now();
  },
};

function feedFor(id) {
  let feed = feeds.get(id);
  if (!feed) {
    feed = new ScanFeed(id);
    feeds.set(id, feed);
  }
  return feed;
}

function handleMessage(message) {
  switch (message.type) {
    case "snapshot": {
      socket.lastDataAt = performance.now();
      if (message.asof) anchorClock(message.asof);
      const feed = feedFor(message.scan);
      const update = feed.applySnapshot(message);
      board.feedUpdated(feed, update);
      break;
    }
    case "delta": {
      socket.lastDataAt = performance.now();
      if (message.asof) anchorClock(message.asof);
      const feed = feeds.get(message.scan);
      if (!feed) break;
      if (feed.awaitingSince !== null) {
        if (performance.now() - feed.awaitingSince > RESYNC_RETRY_MS) socket.resync(feed);
        break;
      }
      const update = feed.applyDelta(message);
      if (update === null) {
        socket.resync(feed);
        board.feedUpdated(feed, null);
      } else {
        board.feedUpdated(feed, update);
      }
      break;
    }
    case "status":
      socket.lastDataAt = performance.now();
      if (message.asof) anchorClock(message.asof);
      header.status(message);
      break;
    case "error":
      handleServerError(message);
      break;
    default:
      break; // pong, unsubscribed
  }
}

function handleServerError(message) {
  if (message.code === "unknown_scan") {
    const match = /'([^']+)'/.exec(message.message ?? "");
    const feed = match ? feeds.get(match[1]) : null;
    if (feed) {
      feed.missing = true;
      socket.subscribed.delete(feed.id);
      board.feedUpdated(feed, null);
      return;
    }
  }
  toast(`Server: ${message.message ?? message.code}`, "error");
}

// ---------------------------------------------------------------------------------------------
// header: clock, phase, feed, stale warning

function warmupText(warmup) {
  const step = warmup.step || "starting";
  const counts = warmup.total > 0 ? ` (${warmup.progress.toLocaleString("en-US")} of ${warmup.total.toLocaleString("en-US")})` : "";
  return `Warming up: ${step}${counts}. Scans start when the history is loaded.`;
}

function linkTitle(link) {
  const lines = [
    `Socket: ${link.socket ?? "?"}, ${link.reconnects} reconnect${link.reconnects === 1 ? "" : "s"}`,
  ];
  if (link.error) lines.push(`Last error: ${link.error}`);
  if (link.malformed > 0) lines.push(`Malformed frames or messages skipped: ${link.malformed}`);
  lines.push(
    link.backfill
      ? `Backfill from REST: ${link.backfill}`
      : `Gaps backfilled from REST: ${link.gaps}${link.gaps_failed > 0 ? ` (${link.gaps_failed} failed)` : ""}`,
  );
  return lines.join("\n");
}

const header = {
  phase: null,
  warmup: null, // {step, progress, total} while the server warms up, else null
  status(message) {
    const warmup = message.warmup;
    this.warmup = warmup && warmup.done === false ? warmup : null;
    const phase = message.session?.phase ?? "unknown";
    this.phase = phase;
    const phaseEl = byTestId("session-phase");
    phaseEl.dataset.phase = phase;
    phaseEl.textContent =
      { pre: "Pre-market", regular: "Market open", post: "After hours", closed: "Closed" }[
        phase
      ] ?? phase;
    phaseEl.title = `Session ${message.session?.date ?? ""}: ${phase}`;
    const feedEl = byTestId("feed-state");
    const state = message.feed?.state ?? "unknown";
    const link = message.feed?.link ?? null;
    const socketDown = link !== null && link.socket !== "live";
    feedEl.dataset.state = state === "live" && socketDown ? "starting" : state;
    let text = `${message.feed?.name ?? "feed"} · ${state}`;
    if (socketDown) text += ` · socket ${link.socket ?? "?"}`;
    if (link?.backfill) text += " · backfilling";
    $(".feed-text", feedEl).textContent = text;
    feedEl.title = link === null ? "Feed state" : linkTitle(link);
    const lag = message.feed?.lag_ms;
    byTestId("feed-lag").textContent =
      typeof lag === "number" ? `lag ${lag < 1000 ? `${fixed(lag, 1)} ms` : `${fixed(lag / 1000, 1)} s`}` : "lag —";
    byTestId("feed-lag").classList.toggle("warn", typeof lag === "number" && lag > 2000);
    const cycle = message.scans?.last_cycle_ms;
    byTestId("cycle-ms").textContent =
      typeof cycle === "number" ? `cycle ${fixed(cycle, 1)} ms` : "cycle —";
    board.phaseChanged();
  },

  tick() {
    const now = marketNow();
    byTestId("et-clock").textContent = etTime.format(now);
    byTestId("et-date").textContent = etDate.format(now);
    this.staleCheck();
  },

  staleCheck() {
    const warning = byTestId("stale-warning");
    const text = $(".stale-text", warning);
    const now = performance.now();
    let message = null;
    let kind = "stale";
    if (socket.state !== "open") {
      if (now - socket.pageOpenedAt > CONNECT_GRACE_MS || socket.attempt > 0) {
        kind = "down";
        const wait = socket.retryAt === null ? 0 : Math.max(0, socket.retryAt - now);
        message =
          socket.state === "connecting"
            ? "Connecting to the scanner…"
            : `Disconnected from the scanner — reconnecting in ${Math.ceil(wait / 1000)} s`;
      }
    } else if (this.warmup !== null) {
      kind = "warmup";
      message = warmupText(this.warmup);
    } else {
      const since = socket.lastDataAt ?? socket.openedAt;
      const age = now - since;
      if (age > STALE_AFTER_MS) {
        message = `No updates for ${Math.floor(age / 1000)} s — the data shown may be stale`;
      }
    }
    warning.hidden = message === null;
    warning.dataset.kind = kind;
    document.body.classList.toggle("is-stale", message !== null);
    if (message !== null && text.textContent !== message) text.textContent = message;
    let button = $(".stale-retry", warning);
    if (kind === "down" && message !== null && socket.state === "closed") {
      if (!button) {
        button = el("button", {
          type: "button",
          class: "btn btn-small stale-retry",
          "data-testid": "reconnect-now",
          text: "Reconnect now",
          onclick: () => socket.reconnectNow(),
        });
        warning.append(button);
      }
    } else if (button) {
      button.remove();
    }
  },
};

// ---------------------------------------------------------------------------------------------
// alerts: a beep, a desktop notification and a toast when a symbol enters a scan

const alerts = {
  audio: null,
  last: new Map(), // `${scan}:${symbol}` -> Date.now() of its last alert

  prepare() {
    try {
      if (!this.audio) this.audio = new AudioContext();
      if (this.audio.state === "suspended") this.audio.resume();
    } catch {
      this.audio = null;
    }
    if ("Notification" in window && Notification.permission === "default") {
      Notification.requestPermission().catch(() => {});
    }
  },

  beep() {
    if (!this.audio) {
      try {
        this.audio = new AudioContext(); // runs once the page has had a user gesture
      } catch {
        return;
      }
    }
    const ctx = this.audio;
    if (ctx.state === "suspended") ctx.resume().catch(() => {});
    if (settings.volume <= 0) return;
    const start = ctx.currentTime + 0.01;
    for (const [offset, frequency] of [
      [0, 880],
      [0.14, 1320],
    ]) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "sine";
      osc.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, start + offset);
      gain.gain.exponentialRampToValueAtTime(0.3 * settings.volume, start + offset + 0.01);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.12);
      osc.connect(gain).connect(ctx.destination);
      osc.start(start + offset);
      osc.stop(start + offset + 0.13);
    }
  },

  entered(panel, symbols) {
    const now = Date.now();
    const cooldown = Math.max(0, Number(settings.cooldownS) || 0) * 1000;
    const fresh = symbols.filter((symbol) => {
      const key = `${panel.scanId}:${symbol}`;
      const last = this.last.get(key);
      if (last !== undefined && now - last < cooldown) return false;
      this.last.delete(key);
      this.last.set(key, now);
      capMap(this.last, ALERT_KEYS);
      return true;
    });
    if (!fresh.length) return;
    const title = panel.title();
    const feed = panel.feed;
    const describe = (symbol) => {
      const price = feed.value(symbol, "price");
      return typeof price === "number" ? `${symbol} ${formatValue("price", price).text}` : symbol;
    };
    const text = `${fresh.map(describe).join(", ")} entered ${title}`;
    this.beep();
    toast(text, "alert", () => symbolPanel.open(fresh[0]));
    if ("Notification" in window && Notification.permission === "granted") {
      try {
        const note = new Notification(`${fresh[0]}${fresh.length > 1 ? ` +${fresh.length - 1}` : ""} · ${title}`, {
          body: text,
          tag: `tapescan-${panel.scanId}`,
        });
        note.onclick = () => {
          window.focus();
          symbolPanel.open(fresh[0]);
        };
      } catch {
        // notifications can be unavailable (e.g. some mobile browsers); the toast remains
      }
    }
  },
};

function toast(text, kind = "info", onClick = null) {
  const box = byTestId("toasts");
  const item = el(
    onClick ? "button" : "div",
    { class: `toast toast-${kind}`, "data-testid": "toast", type: onClick ? "button" : null },
    el("span", { class: "toast-time num", text: etShortTime.format(marketNow()) }),
    el("span", { class: "toast-text", text }),
  );
  if (onClick) item.addEventListener("click", onClick);
  box.prepend(item);
  while (box.children.length > 5) box.lastElementChild.remove();
  setTimeout(() => item.remove(), kind === "error" ? 10000 : 8000);
}

// ---------------------------------------------------------------------------------------------
// columns that a scan does not stream: fetched per symbol from /symbols/{s}, refreshed slowly

const enrich = {
  cache: new Map(), // symbol -> {values, at}
  inflight: new Set(),
  queue: [],
  active: 0,

  values(symbol) {
    return this.cache.get(symbol)?.values;
  },

  store(symbol, values) {
    this.cache.delete(symbol); // re-insert: the most recently refreshed is the youngest
    this.cache.set(symbol, { values, at: performance.now() });
    capMap(this.cache, ENRICH_SYMBOLS);
    board.enriched(symbol);
  },

  request(symbols) {
    const now = performance.now();
    for (const symbol of symbols) {
      const hit = this.cache.get(symbol);
      if (this.inflight.has(symbol) || (hit && now - hit.at < ENRICH_TTL_MS)) continue;
      this.inflight.add(symbol);
      this.queue.push(symbol);
    }
    this.pump();
  },

  pump() {
    while (this.active < ENRICH_CONCURRENCY && this.queue.length) {
      const symbol = this.queue.shift();
      this.active += 1;
      fetchSymbol(symbol)
        .then((values) => values && this.store(symbol, values))
        .catch(() => {})
        .finally(() => {
          this.active -= 1;
          this.inflight.delete(symbol);
          this.pump();
        });
    }
  },
};

function symbolValues(data) {
  if (!data || typeof data !== "object") return null;
  for (const key of ["values", "columns", "indicators", "data"]) {
    const inner = data[key];
    if (inner && typeof inner === "object" && !Array.isArray(inner)) return inner;
  }
  return data;
}

async function fetchSymbol(symbol) {
  const { ok, data } = await api(`/symbols/${encodeURIComponent(symbol)}`);
  if (!ok) return null;
  const values = symbolValues(data);
  const asof = Date.parse(data?.asof ?? "");
  recordPrice(symbol, Number.isFinite(asof) ? asof : marketNow(), values?.price);
  return values;
}

// ---------------------------------------------------------------------------------------------
// scan definitions

const scans = new Map(); // id -> definition

function scanTitle(id) {
  return scans.get(id)?.title ?? id;
}

// ---------------------------------------------------------------------------------------------
// a panel: one scan's live table

let panelSeq = 0;

class Panel {
  constructor(config) {
    this.config = {
      scan: config.scan,
      columns: Array.isArray(config.columns) ? config.columns : null,
      alerts: Boolean(config.alerts),
      sort: config.sort ?? null,
    };
    this.scanId = this.config.scan;
    this.feed = feedFor(this.scanId);
    this.rowEls = new Map(); // symbol -> {tr, cells: Map column -> td}
    this.renderedColumns = [];
    this.activeSymbol = null;
    this.uid = `p${(panelSeq += 1)}`;
    this.build();
  }

  build() {
    const node = $("#panel-template").content.firstElementChild.cloneNode(true);
    this.node = node;
    node.dataset.testid = `panel-${this.scanId}`;
    node.dataset.scan = this.scanId;
    node.setAttribute("aria-labelledby", `${this.uid}-title`);
    this.titleEl = $(".panel-title", node);
    this.titleEl.id = `${this.uid}-title`;
    this.countEl = $(".panel-count", node);
    this.asofEl = $(".panel-asof", node);
    this.table = $("table", node);
    this.headRow = $("thead tr", node);
    this.tbody = $("tbody", node);
    this.emptyEl = $(".panel-empty", node);
    this.table.setAttribute("aria-labelledby", this.titleEl.id);
    this.tbody.dataset.testid = `rows-${this.scanId}`;

    this.alertButton = $(".alert-toggle", node);
    this.alertButton.dataset.testid = `alert-toggle-${this.scanId}`;
    this.alertButton.addEventListener("click", () => this.toggleAlerts());
    this.columnsButton = $(".columns-toggle", node);
    this.columnsButton.dataset.testid = `columns-toggle-${this.scanId}`;
    this.columnsPopover = $(".columns-popover", node);
    this.columnsPopover.dataset.testid = `columns-popover-${this.scanId}`;
    this.columnsButton.addEventListener("click", () => this.togglePopover("columns"));
    this.menuButton = $(".menu-toggle", node);
    this.menuButton.dataset.testid = `menu-toggle-${this.scanId}`;
    this.menuPopover = $(".menu-popover", node);
    this.menuButton.addEventListener("click", () => this.togglePopover("menu"));
    const close = $(".panel-close", node);
    close.dataset.testid = `panel-close-${this.scanId}`;
    close.addEventListener("click", () => board.remove(this));

    this.tbody.addEventListener("click", (event) => {
      const tr = event.target.closest("tr[data-symbol]");
      if (tr) this.openSymbol(tr.dataset.symbol, false);
    });
    this.tbody.addEventListener("keydown", (event) => this.onRowKey(event));
    node.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.closePopovers(true);
    });
    this.refreshHead();
    this.renderAlerts();
    this.render({ full: true, changes: new Map(), entered: [], columnsChanged: true });
  }

  title() {
    return scanTitle(this.scanId);
  }

  visibleColumns() {
    const base = this.config.columns ?? this.feed.columns ?? scans.get(this.scanId)?.columns ?? [
      "symbol",
    ];
    return ["symbol", ...base.filter((c) => c !== "symbol")];
  }

  extraColumns() {
    const streamed = new Set(this.feed.columns ?? []);
    return this.visibleColumns().filter((c) => !streamed.has(c));
  }

  refreshHead() {
    const def = scans.get(this.scanId);
    this.titleEl.textContent = this.title();
    this.titleEl.title = def?.description || this.title();
    this.node.classList.toggle("is-custom", def ? !def.builtin : false);
  }

  renderAlerts() {
    const on = this.config.alerts;
    this.alertButton.setAttribute("aria-pressed", String(on));
    this.alertButton.replaceChildren(icon(on ? "bell" : "bell-off"));
    this.alertButton.setAttribute(
      "aria-label",
      on ? `Alerts on for ${this.title()}` : `Alerts off for ${this.title()}`,
    );
    this.alertButton.title = on
      ? `Alerts on: beep and notify when a symbol enters (cooldown ${settings.cooldownS} s)`
      : "Alerts off: click to beep and notify when a symbol enters";
  }

  toggleAlerts() {
    this.config.alerts = !this.config.alerts;
    if (this.config.alerts) alerts.prepare();
    this.renderAlerts();
    board.save();
  }

  // --- table header and sorting

  renderHead() {
    const columns = this.visibleColumns();
    const extra = new Set(this.extraColumns());
    this.headRow.replaceChildren(
      ...columns.map((column) => {
        const sorted = this.config.sort?.col === column ? this.config.sort.dir : null;
        const kind = kindOf(column);
        const th = el("th", {
          scope: "col",
          class: `${kind === "text" ? "txt" : "num"}${extra.has(column) ? " enriched" : ""}`,
          "aria-sort": sorted ? (sorted === "asc" ? "ascending" : "descending") : null,
          dataset: { col: column },
        });
        const description = catalog.get(column)?.description ?? column;
        th.append(
          el(
            "button",
            {
              type: "button",
              class: "sort",
              "data-testid": `sort-${this.scanId}-${column}`,
              title: extra.has(column)
                ? `${description} — not streamed by this scan; refreshed every ${ENRICH_TTL_MS / 1000} s`
                : description,
              onclick: () => this.cycleSort(column),
            },
            label(column),
            el("span", {
              class: "arrow",
              "aria-hidden": "true",
              text: sorted === "asc" ? "▲" : sorted === "desc" ? "▼" : "",
            }),
          ),
        );
        return th;
      }),
    );
  }

  cycleSort(column) {
    const current = this.config.sort;
    const first = kindOf(column) === "text" ? "asc" : "desc";
    const second = first === "asc" ? "desc" : "asc";
    if (!current || current.col !== column) this.config.sort = { col: column, dir: first };
    else if (current.dir === first) this.config.sort = { col: column, dir: second };
    else this.config.sort = null; // back to the scan's own rank
    board.save();
    this.renderHead();
    this.reorder();
  }

  cellValue(symbol, column) {
    const streamed = this.feed.value(symbol, column);
    if (streamed !== undefined) return streamed;
    return enrich.values(symbol)?.[column];
  }

  sortedOrder() {
    const order = this.feed.order;
    const sort = this.config.sort;
    if (!sort) return order;
    const sign = sort.dir === "asc" ? 1 : -1;
    const rank = new Map(order.map((s, i) => [s, i]));
    return [...order].sort((a, b) => {
      const va = this.cellValue(a, sort.col);
      const vb = this.cellValue(b, sort.col);
      const aNil = va === null || va === undefined;
      const bNil = vb === null || vb === undefined;
      if (aNil || bNil) return aNil && bNil ? rank.get(a) - rank.get(b) : aNil ? 1 : -1;
      return sign * compareValues(va, vb) || rank.get(a) - rank.get(b);
    });
  }

  // --- rows

  makeRow(symbol, columns) {
    const tr = el("tr", {
      tabindex: "-1",
      dataset: { symbol, testid: `row-${this.scanId}-${symbol}` },
    });
    const cells = new Map();
    for (const column of columns) {
      const kind = kindOf(column);
      const cell = el(column === "symbol" ? "th" : "td", {
        class: column === "symbol" ? "sym" : kind === "text" ? "txt" : "num",
        scope: column === "symbol" ? "row" : null,
        dataset: { col: column },
      });
      cells.set(column, cell);
      tr.append(cell);
    }
    const entry = { tr, cells };
    this.fillRow(symbol, entry);
    return entry;
  }

  fillRow(symbol, entry, only = null) {
    for (const [column, cell] of entry.cells) {
      if (only && !only.has(column)) continue;
      if (column === "symbol") {
        cell.textContent = symbol;
        continue;
      }
      const { text, tone } = formatValue(column, this.cellValue(symbol, column));
      if (cell.textContent !== text) cell.textContent = text;
      if (cell.dataset.tone !== tone) cell.dataset.tone = tone;
    }
  }

  render(update) {
    const columns = this.visibleColumns();
    const columnsKey = columns.join();
    if (update?.columnsChanged || columnsKey !== this.renderedColumns.join()) {
      this.renderedColumns = columns;
      this.renderHead();
      this.tbody.replaceChildren();
      this.rowEls.clear();
    }
    if (update) {
      for (const [symbol, entry] of this.rowEls) {
        if (!this.feed.rows.has(symbol)) {
          entry.tr.remove();
          this.rowEls.delete(symbol);
        }
      }
      const entered = new Set(update.entered);
      for (const symbol of this.feed.order) {
        let entry = this.rowEls.get(symbol);
        if (!entry) {
          entry = this.makeRow(symbol, columns);
          this.rowEls.set(symbol, entry);
          if (entered.has(symbol)) restartClass(entry.tr, "row-enter", ENTER_MS);
          continue;
        }
        const diff = update.changes.get(symbol);
        if (!diff && !update.full) continue;
        this.fillRow(symbol, entry);
        if (diff) {
          for (const [column, direction] of diff) {
            const cell = entry.cells.get(column);
            if (!cell || direction === "change") continue;
            restartClass(cell, direction === "up" ? "flash-up" : "flash-down", FLASH_MS);
          }
        }
      }
      this.reorder();
      if (update.entered.length && this.config.alerts && this.feed.snapshots > 0) {
        alerts.entered(this, update.entered);
      }
    }
    this.renderMeta();
    if (this.extraColumns().length) {
      enrich.request(this.feed.order.slice(0, ENRICH_ROWS));
    }
  }

  reorder() {
    const order = this.sortedOrder();
    const focused = this.tbody.contains(document.activeElement) ? document.activeElement : null;
    let cursor = this.tbody.firstElementChild;
    for (const symbol of order) {
      const entry = this.rowEls.get(symbol);
      if (!entry) continue;
      if (entry.tr === cursor) {
        cursor = cursor.nextElementSibling;
      } else {
        this.tbody.insertBefore(entry.tr, cursor);
      }
    }
    this.updateTabStop();
    if (focused && focused !== document.activeElement && focused.isConnected) {
      focused.focus({ preventScroll: true });
    }
  }

  updateTabStop() {
    let active = this.activeSymbol ? this.rowEls.get(this.activeSymbol) : null;
    if (!active) active = this.rowEls.get(this.tbody.firstElementChild?.dataset.symbol ?? "");
    for (const { tr } of this.rowEls.values()) {
      const index = tr === active?.tr ? "0" : "-1";
      if (tr.getAttribute("tabindex") !== index) tr.setAttribute("tabindex", index);
    }
  }

  enriched(symbol) {
    const entry = this.rowEls.get(symbol);
    if (!entry) return;
    const extra = new Set(this.extraColumns());
    if (!extra.size) return;
    this.fillRow(symbol, entry, extra);
    if (this.config.sort && extra.has(this.config.sort.col)) this.reorder();
  }

  renderMeta() {
    const feed = this.feed;
    const def = scans.get(this.scanId);
    this.countEl.textContent = feed.ready ? String(feed.rows.size) : "";
    this.asofEl.textContent =
      feed.ready && Number.isFinite(feed.asofMs) && feed.asofMs > 0 ? etTime.format(feed.asofMs) : "";
    this.node.classList.toggle("is-resyncing", feed.awaitingSince !== null);
    let empty = null;
    if (feed.missing) empty = "This scan does not exist on the server (deleted?).";
    else if (header.warmup !== null) empty = warmupText(header.warmup);
    else if (!feed.ready) empty = "Waiting for the first snapshot…";
    else if (!feed.rows.size) {
      const phase = header.phase;
      const sessions = def?.sessions;
      if (phase && Array.isArray(sessions) && !sessions.includes(phase)) {
        empty = `Inactive now — this scan runs in: ${sessions.join(", ")}.`;
      } else {
        empty = "No symbols match right now.";
      }
    }
    this.emptyEl.hidden = empty === null;
    if (empty !== null) this.emptyEl.textContent = empty;
    this.table.hidden = feed.ready && !feed.rows.size;
  }

  onRowKey(event) {
    const tr = event.target.closest("tr[data-symbol]");
    if (!tr) return;
    const rows = [...this.tbody.children];
    const index = rows.indexOf(tr);
    let next = null;
    switch (event.key) {
      case "ArrowDown":
        next = rows[Math.min(rows.length - 1, index + 1)];
        break;
      case "ArrowUp":
        next = rows[Math.max(0, index - 1)];
        break;
      case "Home":
        next = rows[0];
        break;
      case "End":
        next = rows[rows.length - 1];
        break;
      case "PageDown":
        next = rows[Math.min(rows.length - 1, index + 10)];
        break;
      case "PageUp":
        next = rows[Math.max(0, index - 10)];
        break;
      case "Enter":
      case " ":
        event.preventDefault();
        this.openSymbol(tr.dataset.symbol, true);
        return;
      default:
        return;
    }
    event.preventDefault();
    if (next) {
      this.activeSymbol = next.dataset.symbol;
      this.updateTabStop();
      next.focus();
    }
  }

  openSymbol(symbol, fromKeyboard) {
    this.activeSymbol = symbol;
    this.updateTabStop();
    symbolPanel.open(symbol, fromKeyboard ? this.rowEls.get(symbol)?.tr : null);
  }

  // --- popovers: columns and scan actions

  togglePopover(which) {
    const popover = which === "columns" ? this.columnsPopover : this.menuPopover;
    const button = which === "columns" ? this.columnsButton : this.menuButton;
    const open = popover.hidden;
    this.closePopovers(false);
    if (!open) return;
    if (which === "columns") this.buildColumnsPopover();
    else this.buildMenu();
    popover.hidden = false;
    button.setAttribute("aria-expanded", "true");
    popover.querySelector("input, button")?.focus();
    board.openPopover = this;
  }

  closePopovers(restoreFocus) {
    for (const [popover, button] of [
      [this.columnsPopover, this.columnsButton],
      [this.menuPopover, this.menuButton],
    ]) {
      if (popover.hidden) continue;
      popover.hidden = true;
      button.setAttribute("aria-expanded", "false");
      if (restoreFocus) button.focus();
    }
    if (board.openPopover === this) board.openPopover = null;
  }

  buildColumnsPopover() {
    const visible = new Set(this.visibleColumns());
    const streamed = new Set(this.feed.columns ?? scans.get(this.scanId)?.columns ?? []);
    const all = [...catalog.keys()].filter((c) => c !== "symbol");
    const makeBox = (column) =>
      el(
        "label",
        { class: "check", title: catalog.get(column)?.description ?? "" },
        el("input", {
          type: "checkbox",
          value: column,
          checked: visible.has(column),
          "data-testid": `column-option-${column}`,
          onchange: (event) => this.setColumn(column, event.target.checked),
        }),
        ` ${label(column)}`,
      );
    this.columnsPopover.replaceChildren(
      el("div", { class: "popover-title", text: "Streamed by this scan" }),
      el("div", { class: "check-grid" }, ...all.filter((c) => streamed.has(c)).map(makeBox)),
      el("div", {
        class: "popover-title",
        text: `More columns (refreshed every ${ENRICH_TTL_MS / 1000} s)`,
      }),
      el("div", { class: "check-grid" }, ...all.filter((c) => !streamed.has(c)).map(makeBox)),
      el(
        "div",
        { class: "popover-actions" },
        el("button", {
          type: "button",
          class: "btn btn-small",
          text: "Reset to scan columns",
          onclick: () => {
            this.config.columns = null;
            board.save();
            this.render({ full: true, changes: new Map(), entered: [], columnsChanged: true });
            this.buildColumnsPopover();
          },
        }),
      ),
    );
  }

  setColumn(column, on) {
    const current = this.visibleColumns().filter((c) => c !== "symbol");
    let next;
    if (on) {
      // keep the catalog order so columns do not jump around
      const wanted = new Set([...current, column]);
      const streamed = this.feed.columns ?? [];
      next = [
        ...streamed.filter((c) => wanted.has(c)),
        ...[...catalog.keys()].filter((c) => wanted.has(c) && !streamed.includes(c)),
      ];
    } else {
      next = current.filter((c) => c !== column);
    }
    this.config.columns = ["symbol", ...next.filter((c) => c !== "symbol")];
    if (this.config.sort && !this.config.columns.includes(this.config.sort.col)) {
      this.config.sort = null;
    }
    board.save();
    this.render({ full: true, changes: new Map(), entered: [], columnsChanged: true });
  }

  buildMenu() {
    const def = scans.get(this.scanId);
    const custom = def && !def.builtin;
    const item = (text, testid, action, disabled = false) =>
      el("button", {
        type: "button",
        role: "menuitem",
        class: "menu-item",
        text,
        disabled,
        "data-testid": `${testid}-${this.scanId}`,
        onclick: () => {
          this.closePopovers(false);
          action();
        },
      });
    const index = board.panels.indexOf(this);
    this.menuPopover.replaceChildren(
      def?.description ? el("p", { class: "menu-note", text: def.description }) : null,
      custom ? item("Edit scan…", "menu-edit", () => builder.open("edit", def)) : null,
      item("Duplicate as new scan…", "menu-duplicate", () => builder.open("duplicate", def), !def),
      item("Move left", "menu-left", () => board.move(this, -1), index <= 0),
      item("Move right", "menu-right", () => board.move(this, 1), index >= board.panels.length - 1),
      item("Resync", "menu-resync", () => socket.resync(this.feed)),
      item("Remove panel", "menu-remove", () => board.remove(this)),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// the board: panels, their order, and the saved layout

const board = {
  panels: [],
  openPopover: null,
  node: null,

  init() {
    this.node = byTestId("board");
    const saved = loadJson(STORE.layout, null);
    let configs = Array.isArray(saved?.panels) ? saved.panels : null;
    if (!configs) {
      configs = DEFAULT_PANELS.filter((id) => scans.has(id)).map((scan) => ({ scan }));
      if (!configs.length) configs = [...scans.keys()].slice(0, 6).map((scan) => ({ scan }));
    }
    const seen = new Set();
    for (const config of configs) {
      if (!config || typeof config.scan !== "string" || seen.has(config.scan)) continue;
      seen.add(config.scan);
      this.panels.push(new Panel(config));
    }
    this.mount();
    this.save();
  },

  mount() {
    this.node.replaceChildren(...this.panels.map((p) => p.node));
    byTestId("empty-board").hidden = this.panels.length > 0;
  },

  save() {
    saveJson(STORE.layout, { panels: this.panels.map((p) => p.config) });
  },

  has(scanId) {
    return this.panels.some((p) => p.scanId === scanId);
  },

  add(scanId) {
    if (this.has(scanId)) {
      this.panels.find((p) => p.scanId === scanId).node.focus();
      return;
    }
    const panel = new Panel({ scan: scanId });
    this.panels.push(panel);
    this.mount();
    this.save();
    socket.syncSubscriptions();
    panel.node.scrollIntoView({ block: "nearest" });
    panel.node.focus({ preventScroll: true });
  },

  remove(panel) {
    this.panels = this.panels.filter((p) => p !== panel);
    panel.node.remove();
    byTestId("empty-board").hidden = this.panels.length > 0;
    this.save();
    socket.syncSubscriptions();
    feeds.delete(panel.scanId);
  },

  move(panel, step) {
    const index = this.panels.indexOf(panel);
    const target = index + step;
    if (index < 0 || target < 0 || target >= this.panels.length) return;
    this.panels.splice(index, 1);
    this.panels.splice(target, 0, panel);
    this.mount();
    this.save();
    panel.menuButton.focus();
  },

  feedUpdated(feed, update) {
    for (const panel of this.panels) {
      if (panel.feed === feed) panel.render(update);
    }
  },

  enriched(symbol) {
    for (const panel of this.panels) panel.enriched(symbol);
  },

  phaseChanged() {
    for (const panel of this.panels) panel.renderMeta();
  },

  scanChanged(id) {
    for (const panel of this.panels) {
      if (panel.scanId !== id) continue;
      panel.refreshHead();
      panel.renderAlerts();
    }
  },
};

// ---------------------------------------------------------------------------------------------
// the symbol side panel: values and an intraday chart

const symbolPanel = {
  node: null,
  symbol: null,
  timer: null, // refreshes the values every SYMBOL_REFRESH_MS while open
  bars: [], // today's 1-minute bars from the history store, oldest first (at most BARS_MAX)
  barsState: "unknown", // unknown | loading | ok | error
  barsError: null, // why the last bars request failed, if it did
  barsTimer: null, // the one timer that keeps the bars current, only while the panel is open
  barsAbort: null, // aborts the bars request in flight when its symbol is no longer shown
  values: null,
  returnFocus: null,
  drawQueued: false,

  init() {
    this.node = byTestId("symbol-panel");
    this.canvas = byTestId("symbol-chart");
    byTestId("symbol-close").addEventListener("click", () => this.close());
    this.node.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        this.close();
      }
    });
    priceListeners.add((symbol) => {
      if (symbol === this.symbol && this.barsState !== "ok") this.queueDraw();
    });
    new ResizeObserver(() => this.queueDraw()).observe(this.canvas);
  },

  open(symbol, returnFocus = null) {
    const changed = symbol !== this.symbol;
    this.symbol = symbol;
    this.returnFocus = returnFocus ?? document.activeElement;
    this.node.hidden = false;
    document.body.classList.add("has-symbol-panel");
    byTestId("symbol-title").textContent = symbol;
    if (changed) {
      this.values = null;
      this.stopBars();
      this.bars = [];
      this.barsState = "loading";
      this.barsError = null;
      byTestId("symbol-name").textContent = "";
      byTestId("symbol-price").textContent = "";
      byTestId("symbol-change").textContent = "";
      $("tbody", byTestId("symbol-values")).replaceChildren();
      const note = byTestId("chart-note");
      note.textContent = "Loading today's 1-minute bars…";
      note.dataset.state = "loading";
      for (const key of ["bars", "vwap", "last"]) delete note.dataset[key];
      this.syncBars(symbol);
    }
    this.refresh();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.refresh(), SYMBOL_REFRESH_MS);
    this.queueDraw();
    byTestId("symbol-title").focus({ preventScroll: true });
  },

  close() {
    if (this.node.hidden) return;
    this.node.hidden = true;
    document.body.classList.remove("has-symbol-panel");
    clearInterval(this.timer);
    this.timer = null;
    this.stopBars();
    this.bars = [];
    this.barsState = "unknown";
    this.symbol = null;
    const target = this.returnFocus;
    this.returnFocus = null;
    if (target && target.isConnected) target.focus({ preventScroll: true });
  },
  async refresh() {
    const symbol = this.symbol;
    if (!symbol) return;
    let response;
    try {
      response = await api(`/symbols/${encodeURIComponent(symbol)}`);
    } catch {
      response = { ok: false, status: 0, data: null };
    }
    if (symbol !== this.symbol) return;
    const errorEl = byTestId("symbol-error");
    if (!response.ok) {
      errorEl.hidden = false;
      errorEl.textContent =
        response.status === 404
          ? `${symbol} is not in this scanner's universe.`
          : `Could not load ${symbol} (${response.status || "network error"}).`;
      return;
    }
    errorEl.hidden = true;
    const values = symbolValues(response.data);
    const redraw = values?.prev_close !== this.values?.prev_close; // the chart's reference line
    this.values = values;
    const asof = Date.parse(response.data?.asof ?? "");
    recordPrice(symbol, Number.isFinite(asof) ? asof : marketNow(), values?.price);
    enrich.cache.set(symbol, { values, at: performance.now() });
    this.renderValues(values);
    if (redraw) this.queueDraw();
  },

  renderValues(values) {
    if (!values) return;
    byTestId("symbol-name").textContent = [values.name, values.exchange, values.sector]
      .filter((v) => typeof v === "string" && v)
      .join(" · ");
    byTestId("symbol-price").textContent = formatValue("price", values.price).text;
    const change = formatValue("change_pct", values.change_pct);
    const changeEl = byTestId("symbol-change");
    changeEl.textContent = change.tone === "nil" ? "" : `${change.text}%`;
    changeEl.dataset.tone = change.tone;
    const skip = new Set(["symbol", "name", "exchange", "sector"]);
    const names = [
      ...[...catalog.keys()].filter((k) => k in values),
      ...Object.keys(values).filter((k) => !catalog.has(k)),
    ].filter((k) => !skip.has(k) && (typeof values[k] !== "object" || values[k] === null));
    const tbody = $("tbody", byTestId("symbol-values"));
    const rows = new Map([...tbody.children].map((tr) => [tr.dataset.col, tr]));
    const fresh = [];
    for (const name of names) {
      const { text, tone } = formatValue(name, values[name], true);
      let tr = rows.get(name);
      if (!tr) {
        tr = el(
          "tr",
          { dataset: { col: name, testid: `value-${name}` } },
          el("th", { scope: "row", title: catalog.get(name)?.description ?? name, text: label(name) }),
          el("td", { class: "num" }),
        );
      }
      const td = tr.lastElementChild;
      const old = td.textContent;
      if (old !== text) {
        td.textContent = text;
        const before = Number(old.replaceAll(",", ""));
        const after = values[name];
        if (old && typeof after === "number" && Number.isFinite(before) && before !== after) {
          restartClass(td, after > before ? "flash-up" : "flash-down", FLASH_MS);
        }
      }
      td.dataset.tone = tone;
      fresh.push(tr);
    }
    tbody.replaceChildren(...fresh);
  },

  stopBars() {
    clearTimeout(this.barsTimer);
    this.barsTimer = null;
    this.barsAbort?.abort();
    this.barsAbort = null;
  },

  /**
   * Today's bars for `symbol`: all of them when none are held yet, else those from the last
   * held bar's minute on (that bar again, perhaps updated, and any newer ones), merged by time.
   * Then the next update is scheduled, while the panel still shows this symbol.
   */
  async syncBars(symbol) {
    this.stopBars();
    const abort = new AbortController();
    this.barsAbort = abort;
    const since = this.bars.length ? this.bars[this.bars.length - 1].iso : null;
    let fresh = null;
    let failure = null;
    try {
      fresh = await fetchBars(symbol, since, abort.signal);
    } catch (error) {
      failure = error;
    }
    if (abort.signal.aborted || symbol !== this.symbol) return;
    this.barsAbort = null;
    if (fresh) {
      mergeBars(this.bars, fresh);
      this.barsState = "ok";
      this.barsError = null;
    } else {
      this.barsError =
        failure instanceof BarsError ? failure.message : "the bars API could not be reached";
      if (this.barsState !== "ok") this.barsState = "error"; // else keep what is held
    }
    this.queueDraw();
    if (!this.node.hidden) {
      this.barsTimer = setTimeout(() => this.syncBars(symbol), BARS_POLL_MS);
    }
  },
  queueDraw() {
    if (this.drawQueued || this.node.hidden) return;
    this.drawQueued = true;
    requestAnimationFrame(() => {
      this.drawQueued = false;
      this.draw();
    });
  },

  draw() {
    if (!this.symbol) return;
    const note = byTestId("chart-note");
    const prevClose = this.values?.prev_close;
    const reference = typeof prevClose === "number" && Number.isFinite(prevClose) ? prevClose : null;
    if (this.barsState === "ok") {
      const bars = this.bars;
      const vwap = sessionVwap(bars);
      const first = bars[0];
      const last = bars[bars.length - 1];
      const lastVwap = vwap.length ? vwap[vwap.length - 1] : null;
      drawChart(this.canvas, {
        line: bars.map((b) => [b.t + 30_000, b.c]), // each close in the middle of its minute
        bars,
        vwap,
        reference,
        span: last ? [first.t, last.t + 60_000] : null,
        empty: "No 1-minute bars recorded for this symbol today yet",
      });
      note.dataset.state = "bars";
      note.dataset.bars = String(bars.length);
      if (lastVwap === null) delete note.dataset.vwap;
      else note.dataset.vwap = lastVwap.toFixed(4);
      if (last) note.dataset.last = last.iso;
      else delete note.dataset.last;
      let text = `${bars.length} one-minute bar${bars.length === 1 ? "" : "s"} from the history store`;
      if (last) text += `, ${etShortTime.format(first.t)}–${etShortTime.format(last.t)} ET`;
      text += this.barsError
        ? `; the last update failed (${this.barsError}), retrying every 15 s.`
        : "; updated every 15 s while this panel is open.";
      note.textContent = text;
      this.renderLegend({ price: last?.c, vwap: lastVwap, prevClose: reference, bars: true });
      return;
    }
    const points = priceHistory.get(this.symbol) ?? [];
    drawChart(this.canvas, { line: points, reference });
    this.renderLegend({ price: points[points.length - 1]?.[1], prevClose: reference, bars: false });
    if (this.barsState === "error") {
      note.textContent =
        `Drawn from ${points.length} price${points.length === 1 ? "" : "s"} seen since this ` +
        `page opened: the 1-minute bars could not be loaded (${this.barsError}); ` +
        "retrying every 15 s.";
      note.dataset.state = "fallback";
      for (const key of ["bars", "vwap", "last"]) delete note.dataset[key];
    }
  },

  renderLegend({ price = null, vwap = null, prevClose = null, bars }) {
    const legend = byTestId("chart-legend");
    const digits = typeof price === "number" && price < 1 ? 4 : 2;
    const show = (key, visible, value = null) => {
      const item = $(`[data-key="${key}"]`, legend);
      item.hidden = !visible;
      const out = $(".num", item);
      if (out) out.textContent = typeof value === "number" ? fixed(value, digits) : "—";
    };
    show("price", true, price);
    show("vwap", bars, vwap);
    show("prev-close", true, prevClose);
    show("volume", bars);
  },
};

class BarsError extends Error {}

/** Today's 1-minute bars of `symbol` (from `since`, an ISO instant, when given), all pages. */
async function fetchBars(symbol, since, signal) {
  let base = `/symbols/${encodeURIComponent(symbol)}/bars?interval=1m&limit=${BARS_PAGE}`;
  if (since) base += `&from=${encodeURIComponent(since)}`;
  const bars = [];
  let cursor = null;
  for (let page = 0; page < BARS_MAX_PAGES; page += 1) {
    const path = cursor ? `${base}&cursor=${encodeURIComponent(cursor)}` : base;
    const response = await api(path, { signal });
    if (!response.ok) {
      const why = typeof response.data?.message === "string" ? `: ${response.data.message}` : "";
      throw new BarsError(`the bars API answered ${response.status}${why}`);
    }
    bars.push(...parseBars(response.data));
    cursor = response.data?.next_cursor ?? null;
    if (!cursor) break;
  }
  return bars;
}

/** Bars as the API gives them ({"t": ISO, "open", ..., "vwap"}), oldest first. */
function parseBars(data) {
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  const bars = [];
  for (const bar of Array.isArray(data?.bars) ? data.bars : []) {
    const t = Date.parse(bar?.t ?? "");
    const c = num(bar?.close);
    if (!Number.isFinite(t) || c === null) continue;
    bars.push({
      t,
      iso: bar.t,
      o: num(bar.open),
      h: num(bar.high),
      l: num(bar.low),
      c,
      v: num(bar.volume) ?? 0,
      vwap: num(bar.vwap),
    });
  }
  return bars;
}

const etDay = new Intl.DateTimeFormat("en-CA", {
  timeZone: "America/New_York",
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
});

/**
 * Merges `fresh` bars into `bars` (both oldest first) by time: a bar of a minute already held
 * replaces it (the last one may have been updated), newer ones are appended. Only the newest
 * session day and the last BARS_MAX bars are kept.
 */
function mergeBars(bars, fresh) {
  for (const bar of fresh) {
    const last = bars[bars.length - 1];
    if (!last || bar.t > last.t) {
      bars.push(bar);
      continue;
    }
    const i = bars.findLastIndex((b) => b.t <= bar.t);
    if (i >= 0 && bars[i].t === bar.t) bars[i] = bar;
    else bars.splice(i + 1, 0, bar);
  }
  if (bars.length > BARS_MAX) bars.splice(0, bars.length - BARS_MAX);
  if (bars.length) {
    const day = etDay.format(bars[bars.length - 1].t);
    let stale = 0;
    while (stale < bars.length && etDay.format(bars[stale].t) !== day) stale += 1;
    if (stale) bars.splice(0, stale);
  }
}

/** The session VWAP after each bar: sum(vwap x volume) / sum(volume), close when no vwap. */
function sessionVwap(bars) {
  const out = [];
  let pv = 0;
  let volume = 0;
  for (const b of bars) {
    if (b.v > 0) {
      pv += (b.vwap ?? b.c) * b.v;
      volume += b.v;
    }
    out.push(volume > 0 ? pv / volume : (b.vwap ?? b.c));
  }
  return out;
}
function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function niceStep(range, count) {
  const raw = range / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return power * (unit < 1.5 ? 1 : unit < 3 ? 2 : unit < 7 ? 5 : 10);
}

/**
 * An intraday chart with axes in ET: a price line, the previous close (dashed) and, when bars
 * are given, their volume in a lower band and the session VWAP line. `span` is the time range
 * ([ms, ms]) when it is not that of the line.
 */
function drawChart(
  canvas,
  { line, bars = null, vwap = null, reference = null, span = null, empty = null },
) {
  const rect = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(rect.width * dpr));
  const height = Math.max(1, Math.round(rect.height * dpr));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const w = rect.width;
  const h = rect.height;
  ctx.clearRect(0, 0, w, h);
  const fontPx = Math.max(10, Math.round(parseFloat(getComputedStyle(canvas).fontSize) * 0.85));
  ctx.font = `${fontPx}px ${cssVar("--font-mono") || "monospace"}`;
  const muted = cssVar("--muted") || "#8a94a6";
  const grid = cssVar("--grid") || "#263041";
  const accent = cssVar("--accent") || "#4ea1ff";
  const vwapColor = cssVar("--warn") || "#f5a524";
  const withBars = Array.isArray(bars) && bars.length > 0;
  if (line.length < (withBars ? 1 : 2)) {
    ctx.fillStyle = muted;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    const message =
      empty ?? (line.length ? "Collecting prices…" : "No prices seen yet for this symbol");
    ctx.fillText(message, w / 2, h / 2);
    canvas.setAttribute("aria-label", `Intraday price chart: ${message}`);
    return;
  }
  let lo = Infinity;
  let hi = -Infinity;
  for (const [, p] of line) {
    lo = Math.min(lo, p);
    hi = Math.max(hi, p);
  }
  for (const p of vwap ?? []) {
    lo = Math.min(lo, p);
    hi = Math.max(hi, p);
  }
  // the previous close is drawn in the price range unless it would squash the day's moves
  const range = Math.max(hi - lo, hi * 0.002);
  const hasReference =
    typeof reference === "number" && reference > lo - range && reference < hi + range;
  if (hasReference) {
    lo = Math.min(lo, reference);
    hi = Math.max(hi, reference);
  }
  if (hi - lo < 1e-9) {
    hi += Math.max(0.01, hi * 0.001);
    lo -= Math.max(0.01, lo * 0.001);
  }
  const pad = (hi - lo) * 0.08;
  lo -= pad;
  hi += pad;
  const t0 = span ? span[0] : line[0][0];
  const t1 = Math.max(span ? span[1] : line[line.length - 1][0], t0 + 1);
  const right = Math.ceil(ctx.measureText("0000.00").width) + 12;
  const bottom = fontPx + 10;
  const plotW = Math.max(10, w - right - 8);
  const plotH = Math.max(10, h - bottom - 8);
  // with bars, the lower quarter of the plot is the volume band
  const volGap = withBars ? 6 : 0;
  const volH = withBars ? Math.round(plotH * 0.24) : 0;
  const priceH = plotH - volH - volGap;
  const volTop = 8 + priceH + volGap;
  const x = (t) => 8 + ((t - t0) / (t1 - t0)) * plotW;
  const y = (p) => 8 + (1 - (p - lo) / (hi - lo)) * priceH;
  const digits = hi < 1 ? 4 : 2;

  ctx.strokeStyle = grid;
  ctx.fillStyle = muted;
  ctx.lineWidth = 1;
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  const step = niceStep(hi - lo, withBars ? 4 : 5);
  for (let p = Math.ceil(lo / step) * step; p <= hi; p += step) {
    const py = Math.round(y(p)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(8, py);
    ctx.lineTo(8 + plotW, py);
    ctx.stroke();
    ctx.fillText(fixed(p, digits), 8 + plotW + 6, py);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const timeFormat = t1 - t0 < 15 * 60_000 ? etTime : etShortTime;
  const ticks = Math.max(2, Math.floor(plotW / (timeFormat === etTime ? 110 : 80)));
  let tickTimes = [];
  if (timeFormat === etTime) {
    for (let i = 0; i <= ticks; i += 1) tickTimes.push(t0 + ((t1 - t0) * i) / ticks);
  } else {
    // whole minutes, hours: ET is a whole number of hours from UTC, so these are round in ET
    const minutes = [1, 2, 5, 10, 15, 30, 60, 120, 180, 240];
    const stepMs = (minutes.find((m) => (t1 - t0) / (m * 60_000) <= ticks) ?? 240) * 60_000;
    for (let t = Math.ceil(t0 / stepMs) * stepMs; t <= t1; t += stepMs) tickTimes.push(t);
    if (tickTimes.length < 2) tickTimes = [t0, t1];
  }
  let lastLabel = "";
  let lastRight = -Infinity;
  for (const t of tickTimes) {
    const text = timeFormat.format(t);
    const half = ctx.measureText(text).width / 2;
    const center = Math.min(Math.max(x(t), 8 + half), 8 + plotW - half);
    if (text === lastLabel || center - half < lastRight + 8) continue;
    lastLabel = text;
    lastRight = center + half;
    ctx.fillText(text, center, 8 + plotH + 5);
  }

  if (withBars) {
    let maxV = 0;
    for (const b of bars) maxV = Math.max(maxV, b.v);
    const py = volTop - Math.round(volGap / 2) + 0.5;
    ctx.strokeStyle = grid;
    ctx.beginPath();
    ctx.moveTo(8, py);
    ctx.lineTo(8 + plotW, py);
    ctx.stroke();
    if (maxV > 0) {
      const up = cssVar("--up") || "#22c57d";
      const down = cssVar("--down") || "#ff5c61";
      const bw = Math.max(1, (plotW / ((t1 - t0) / 60_000)) * 0.7);
      ctx.save();
      ctx.globalAlpha = 0.6;
      let previous = null;
      for (const b of bars) {
        const bh = Math.max(b.v > 0 ? 1 : 0, (b.v / maxV) * volH);
        const rising = b.o !== null ? b.c >= b.o : previous === null || b.c >= previous;
        ctx.fillStyle = rising ? up : down;
        ctx.fillRect(x(b.t + 30_000) - bw / 2, volTop + volH - bh, bw, bh);
        previous = b.c;
      }
      ctx.restore();
      ctx.fillStyle = muted;
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      ctx.fillText(compact(maxV), 8 + plotW + 6, volTop);
    }
  }

  if (typeof reference === "number") {
    if (hasReference) {
      ctx.save();
      ctx.setLineDash([4, 4]);
      ctx.strokeStyle = muted;
      const py = Math.round(y(reference)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(8, py);
      ctx.lineTo(8 + plotW, py);
      ctx.stroke();
      ctx.restore();
    } else {
      // too far away to draw in scale: say where it is
      const above = reference > hi;
      ctx.fillStyle = muted;
      ctx.textAlign = "right";
      ctx.textBaseline = above ? "top" : "bottom";
      ctx.fillText(
        `prev close ${fixed(reference, digits)} ${above ? "↑" : "↓"}`,
        8 + plotW - 4,
        above ? 10 : 6 + priceH,
      );
    }
  }

  const gradient = ctx.createLinearGradient(0, 8, 0, 8 + priceH);
  gradient.addColorStop(0, `${accent}55`);
  gradient.addColorStop(1, `${accent}00`);
  ctx.beginPath();
  ctx.moveTo(x(line[0][0]), y(line[0][1]));
  for (const [t, p] of line) ctx.lineTo(x(t), y(p));
  ctx.lineTo(x(line[line.length - 1][0]), 8 + priceH);
  ctx.lineTo(x(line[0][0]), 8 + priceH);
  ctx.closePath();
  ctx.fillStyle = gradient;
  ctx.fill();
  ctx.beginPath();
  ctx.moveTo(x(line[0][0]), y(line[0][1]));
  for (const [t, p] of line) ctx.lineTo(x(t), y(p));
  ctx.strokeStyle = accent;
  ctx.lineWidth = 1.5;
  ctx.stroke();

  const tagAt = (value, py, color) => {
    const tag = fixed(value, digits);
    ctx.fillStyle = color;
    ctx.fillRect(8 + plotW + 2, py - fontPx / 2 - 3, ctx.measureText(tag).width + 8, fontPx + 6);
    ctx.fillStyle = cssVar("--bg") || "#000";
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    ctx.fillText(tag, 8 + plotW + 6, py);
    return tag;
  };
  const [lastT, lastP] = line[line.length - 1];
  const ly = y(lastP);
  let vwapText = "";
  if (withBars && vwap && vwap.length === bars.length) {
    ctx.beginPath();
    bars.forEach((b, i) => {
      const px = x(b.t + 30_000);
      if (i === 0) ctx.moveTo(px, y(vwap[i]));
      else ctx.lineTo(px, y(vwap[i]));
    });
    ctx.strokeStyle = vwapColor;
    ctx.lineWidth = 1.25;
    ctx.stroke();
    const last = vwap[vwap.length - 1];
    vwapText = `, session VWAP ${fixed(last, digits)}`;
    if (Math.abs(y(last) - ly) > fontPx + 6) tagAt(last, y(last), vwapColor);
  }
  ctx.fillStyle = accent;
  ctx.beginPath();
  ctx.arc(x(lastT), ly, 2.5, 0, Math.PI * 2);
  ctx.fill();
  const tag = tagAt(lastP, ly, accent);
  const what = withBars
    ? `${bars.length} one-minute bars`
    : `${line.length} prices seen since the page opened`;
  canvas.setAttribute(
    "aria-label",
    `Intraday price chart: ${what} from ${etShortTime.format(t0)} to ` +
      `${etShortTime.format(t1)} ET, last ${tag}${vwapText}` +
      (typeof reference === "number" ? `, previous close ${fixed(reference, digits)}` : ""),
  );
}
// ---------------------------------------------------------------------------------------------
// the scan builder dialog

const builder = {
  dialog: null,
  form: null,
  mode: "create",
  editingId: null,
  columns: [],

  init() {
    this.dialog = byTestId("scan-builder");
    this.form = byTestId("builder-form");
    this.filterRows = byTestId("builder-filters");
    this.chips = byTestId("builder-columns");
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    byTestId("builder-cancel").addEventListener("click", () => this.dialog.close());
    byTestId("builder-add-filter").addEventListener("click", () => {
      this.addFilter({ field: "change_pct", op: ">=", value: "" });
      this.filterRows.lastElementChild?.querySelector("select")?.focus();
    });
    byTestId("builder-add-column").addEventListener("click", () => {
      const select = byTestId("builder-column-select");
      if (select.value && !this.columns.includes(select.value)) {
        this.columns.push(select.value);
        this.renderChips();
      }
    });
    byTestId("builder-token-forget").addEventListener("click", () => {
      localStorage.removeItem(STORE.token);
      this.renderToken();
      byTestId("builder-token").focus();
    });
    byTestId("builder-delete").addEventListener("click", () => this.remove());
  },

  fillSelects() {
    const numeric = [...catalog.values()].filter((c) => c.kind !== "text");
    byTestId("builder-sort-field").replaceChildren(
      ...numeric.map((c) => el("option", { value: c.name, text: `${label(c.name)} · ${c.name}` })),
    );
    byTestId("builder-column-select").replaceChildren(
      ...[...catalog.values()]
        .filter((c) => c.name !== "symbol")
        .map((c) => el("option", { value: c.name, text: `${label(c.name)} · ${c.name}` })),
    );
  },

  open(mode, def = null) {
    this.mode = mode;
    this.editingId = mode === "edit" ? def.id : null;
    this.fillSelects();
    this.clearErrors();
    const source = def ?? {
      id: "",
      title: "",
      description: "",
      filters: [
        { field: "change_pct", op: ">=", value: 5 },
        { field: "price", op: ">=", value: 1 },
        { field: "volume", op: ">=", value: 100000 },
      ],
      sessions: ["pre", "regular", "post"],
      sort: { field: "change_pct", direction: "desc" },
      limit: 50,
      columns: ["symbol", "price", "change_pct", "volume", "rvol"],
    };
    const id = mode === "duplicate" ? `${def.id}_copy`.slice(0, 48) : source.id;
    const title = mode === "duplicate" ? `${def.title} (copy)`.slice(0, 80) : source.title;
    $("#builder-title").textContent =
      mode === "edit" ? `Edit scan ${def.id}` : mode === "duplicate" ? "New scan from " + def.title : "New scan";
    const idInput = byTestId("builder-id");
    idInput.value = id;
    idInput.readOnly = mode === "edit";
    byTestId("builder-title").value = title;
    byTestId("builder-description").value = source.description ?? "";
    const sessions = new Set(source.sessions ?? ["pre", "regular", "post"]);
    for (const box of this.form.querySelectorAll('input[name="sessions"]')) {
      box.checked = sessions.has(box.value);
    }
    this.filterRows.replaceChildren();
    for (const filter of source.filters ?? []) this.addFilter(filter);
    byTestId("builder-sort-field").value = source.sort?.field ?? "change_pct";
    byTestId("builder-sort-direction").value = source.sort?.direction ?? "desc";
    byTestId("builder-limit").value = String(source.limit ?? 50);
    this.columns = (source.columns ?? []).filter((c) => c !== "symbol");
    this.renderChips();
    const note = byTestId("builder-note");
    note.hidden = !(mode === "edit" && def?.builtin);
    note.textContent = "Saving replaces this built-in scan for every user of this server.";
    byTestId("builder-delete").hidden = !(mode === "edit" && def && !def.builtin);
    this.renderToken();
    if (!this.dialog.open) this.dialog.showModal();
    (mode === "edit" ? byTestId("builder-title") : idInput).focus();
  },

  renderToken() {
    const saved = Boolean(localStorage.getItem(STORE.token));
    byTestId("builder-token").hidden = saved;
    byTestId("builder-token").previousElementSibling.hidden = saved;
    byTestId("builder-token-saved").hidden = !saved;
  },

  addFilter(filter) {
    const index = this.filterRows.children.length;
    const fieldSelect = el(
      "select",
      { class: "input", "aria-label": "Field", "data-testid": "filter-field" },
      ...[...catalog.values()].map((c) =>
        el("option", { value: c.name, text: `${label(c.name)} · ${c.name}` }),
      ),
    );
    fieldSelect.value = filter.field;
    if (fieldSelect.value !== filter.field) {
      fieldSelect.append(el("option", { value: filter.field, text: filter.field }));
      fieldSelect.value = filter.field;
    }
    const opSelect = el(
      "select",
      { class: "input op", "aria-label": "Operator", "data-testid": "filter-op" },
      ...OPS.map((op) => el("option", { value: op, text: op })),
    );
    opSelect.value = OPS.includes(filter.op) ? filter.op : ">=";
    const valueText = Array.isArray(filter.value)
      ? filter.value.join(", ")
      : filter.value === undefined || filter.value === null
        ? ""
        : String(filter.value);
    const valueInput = el("input", {
      class: "input mono",
      "aria-label": "Value",
      "data-testid": "filter-value",
      autocomplete: "off",
      value: valueText,
    });
    const hint = () => {
      const kind = kindOf(fieldSelect.value);
      valueInput.placeholder =
        opSelect.value === "between"
          ? "low, high"
          : opSelect.value === "in"
            ? "a, b, c"
            : kind === "flag"
              ? "true / false"
              : kind === "text"
                ? "text"
                : "number";
    };
    fieldSelect.addEventListener("change", hint);
    opSelect.addEventListener("change", hint);
    hint();
    const removeButton = el("button", {
      type: "button",
      class: "btn btn-icon btn-small",
      "aria-label": "Remove filter",
      title: "Remove filter",
      text: "✕",
      "data-testid": "filter-remove",
      onclick: () => {
        row.remove();
        this.renumberFilters();
      },
    });
    const cell = (name, control) =>
      el("div", { class: "filter-cell", dataset: { part: name } }, control);
    const row = el(
      "div",
      { class: "filter-row", dataset: { testid: `filter-row-${index}`, index: String(index) } },
      cell("field", fieldSelect),
      cell("op", opSelect),
      cell("value", valueInput),
      removeButton,
    );
    this.filterRows.append(row);
  },

  renumberFilters() {
    [...this.filterRows.children].forEach((row, i) => {
      row.dataset.index = String(i);
      row.dataset.testid = `filter-row-${i}`;
    });
  },

  renderChips() {
    this.chips.replaceChildren(
      ...this.columns.map((column, i) =>
        el(
          "li",
          { class: "chip", dataset: { index: String(i), testid: `column-chip-${column}` } },
          el("span", { text: label(column), title: column }),
          el("button", {
            type: "button",
            class: "chip-move",
            "aria-label": `Move ${label(column)} left`,
            text: "‹",
            disabled: i === 0,
            onclick: () => {
              [this.columns[i - 1], this.columns[i]] = [this.columns[i], this.columns[i - 1]];
              this.renderChips();
            },
          }),
          el("button", {
            type: "button",
            class: "chip-remove",
            "aria-label": `Remove ${label(column)}`,
            text: "✕",
            onclick: () => {
              this.columns.splice(i, 1);
              this.renderChips();
            },
          }),
        ),
      ),
    );
  },

  parseValue(field, op, raw) {
    const kind = kindOf(field);
    const text = raw.trim();
    const asNumber = (s) => (s !== "" && Number.isFinite(Number(s)) ? Number(s) : s);
    if (op === "between") {
      const parts = text.split(/[\s,;]+/).filter(Boolean);
      return parts.map(asNumber);
    }
    if (op === "in") {
      const parts = text.split(",").map((s) => s.trim()).filter(Boolean);
      return kind === "text" ? parts : parts.map(asNumber);
    }
    if (kind === "flag") return text === "true" ? true : text === "false" ? false : text;
    if (kind === "text") return raw;
    return asNumber(text);
  },

  collect() {
    const filters = [...this.filterRows.children].map((row) => {
      const field = $('[data-testid="filter-field"]', row).value;
      const op = $('[data-testid="filter-op"]', row).value;
      const value = this.parseValue(field, op, $('[data-testid="filter-value"]', row).value);
      return { field, op, value };
    });
    const sessions = [...this.form.querySelectorAll('input[name="sessions"]:checked')].map(
      (box) => box.value,
    );
    const limitText = byTestId("builder-limit").value.trim();
    const scan = {
      id: byTestId("builder-id").value.trim(),
      title: byTestId("builder-title").value.trim(),
      filters,
      sessions,
      sort: {
        field: byTestId("builder-sort-field").value,
        direction: byTestId("builder-sort-direction").value,
      },
      limit: limitText === "" ? null : Number(limitText),
      columns: [...this.columns],
    };
    const description = byTestId("builder-description").value.trim();
    if (description) scan.description = description;
    return scan;
  },

  clearErrors() {
    for (const node of this.form.querySelectorAll(".field-error")) node.remove();
    for (const node of this.form.querySelectorAll("[aria-invalid]")) {
      node.removeAttribute("aria-invalid");
      node.removeAttribute("aria-describedby");
    }
    for (const node of this.form.querySelectorAll(".has-error")) node.classList.remove("has-error");
    byTestId("builder-errors").replaceChildren();
  },

  /** The element an error of `path` belongs next to, or null for the form-level list. */
  hostFor(path) {
    let match = /^filters\[(\d+)\](?:\.(field|op|value))?/.exec(path);
    if (match) {
      const row = this.filterRows.children[Number(match[1])];
      if (!row) return null;
      return match[2] ? $(`.filter-cell[data-part="${match[2]}"]`, row) : row;
    }
    match = /^columns\[(\d+)\]/.exec(path);
    if (match) return this.chips.children[Number(match[1])] ?? $('[data-field="columns"]', this.form);
    if (path === "sort") return $('[data-field="sort.field"]', this.form);
    return this.form.querySelector(`[data-field="${CSS.escape(path)}"]`);
  },

  showErrors(fields, message) {
    this.clearErrors();
    const general = byTestId("builder-errors");
    let first = null;
    fields.forEach(({ path, message: text }, i) => {
      const host = this.hostFor(String(path));
      const id = `field-error-${i}`;
      const error = el("p", {
        class: "field-error",
        id,
        "data-testid": `field-error-${path}`,
        "data-path": path,
        text: host ? text : `${path}: ${text}`,
      });
      if (!host) {
        general.append(error);
        return;
      }
      host.classList.add("has-error");
      const control = host.matches("input, select")
        ? host
        : host.querySelector("input:not([type=checkbox]), select, input");
      if (host.classList.contains("chip")) host.after(error);
      else host.append(error);
      if (control) {
        control.setAttribute("aria-invalid", "true");
        control.setAttribute("aria-describedby", id);
        first = first ?? control;
      }
    });
    if (message) {
      general.prepend(
        el("p", {
          class: "form-error",
          "data-testid": "builder-error-message",
          text: fields.length
            ? `The server refused the scan: fix the ${fields.length === 1 ? "highlighted field" : `${fields.length} highlighted fields`}.`
            : message,
        }),
      );
    }
    first?.focus();
  },

  token() {
    return localStorage.getItem(STORE.token) || byTestId("builder-token").value.trim();
  },

  async submit() {
    const token = this.token();
    if (!token) {
      this.showErrors(
        [{ path: "token", message: "Enter the admin token (TAPESCAN_ADMIN_TOKEN of the server)." }],
        null,
      );
      return;
    }
    const scan = this.collect();
    const submitButton = byTestId("builder-submit");
    submitButton.disabled = true;
    let response;
    try {
      response =
        this.mode === "edit"
          ? await api(`/scans/${encodeURIComponent(this.editingId)}`, {
              method: "PUT",
              body: { ...scan, id: this.editingId },
              token,
            })
          : await api("/scans", { method: "POST", body: scan, token });
    } catch (error) {
      response = { ok: false, status: 0, data: { message: `Network error: ${error.message}` } };
    } finally {
      submitButton.disabled = false;
    }
    if (response.status === 401 || response.status === 403) {
      localStorage.removeItem(STORE.token);
      this.renderToken();
      this.showErrors(
        [
          {
            path: "token",
            message:
              response.data?.message ??
              (response.status === 401 ? "An admin token is required." : "The admin token was refused."),
          },
        ],
        null,
      );
      return;
    }
    if (response.status === 409) {
      this.showErrors([{ path: "id", message: response.data?.message ?? "This id is taken." }], null);
      return;
    }
    if (!response.ok) {
      const fields = Array.isArray(response.data?.fields) ? response.data.fields : [];
      this.showErrors(
        fields,
        response.data?.message ?? `The server answered ${response.status || "nothing"}.`,
      );
      return;
    }
    localStorage.setItem(STORE.token, token);
    byTestId("builder-token").value = "";
    const saved = response.data && typeof response.data === "object" && response.data.id
      ? response.data
      : { ...scan, builtin: false };
    const def = saved.scan && typeof saved.scan === "object" ? saved.scan : saved;
    scans.set(def.id, def);
    this.dialog.close();
    if (this.mode === "edit") {
      board.scanChanged(def.id);
      const feed = feeds.get(def.id);
      if (feed) socket.resync(feed);
      toast(`Scan “${def.title}” saved.`);
    } else {
      board.add(def.id);
      toast(`Scan “${def.title}” created.`);
    }
  },

  async remove() {
    const id = this.editingId;
    if (!id || !confirm(`Delete the scan “${scanTitle(id)}” for every user of this server?`)) {
      return;
    }
    const token = this.token();
    const response = await api(`/scans/${encodeURIComponent(id)}`, { method: "DELETE", token });
    if (!response.ok) {
      this.showErrors([], response.data?.message ?? `The server answered ${response.status}.`);
      return;
    }
    scans.delete(id);
    for (const panel of [...board.panels]) if (panel.scanId === id) board.remove(panel);
    this.dialog.close();
    toast(`Scan ${id} deleted.`);
  },
};

// ---------------------------------------------------------------------------------------------
// the "add a panel" picker and the settings dialog

const picker = {
  init() {
    this.dialog = byTestId("panel-picker");
    this.list = byTestId("picker-list");
    this.filter = byTestId("picker-filter");
    this.filter.addEventListener("input", () => this.render());
    byTestId("add-panel-button").addEventListener("click", () => this.open());
    byTestId("picker-new-scan").addEventListener("click", () => {
      this.dialog.close();
      builder.open("create");
    });
  },

  open() {
    this.filter.value = "";
    this.render();
    this.dialog.showModal();
    this.filter.focus();
    // scans made elsewhere since the page loaded
    listAll("/scans", ["items", "scans"])
      .then((list) => {
        for (const scan of list) if (scan?.id) scans.set(scan.id, scan);
        if (this.dialog.open) this.render();
      })
      .catch(() => {});
  },

  render() {
    const needle = this.filter.value.trim().toLowerCase();
    const items = [...scans.values()].filter(
      (s) =>
        !needle ||
        s.id.includes(needle) ||
        (s.title ?? "").toLowerCase().includes(needle) ||
        (s.description ?? "").toLowerCase().includes(needle),
    );
    this.list.replaceChildren(
      ...items.map((scan) => {
        const shown = board.has(scan.id);
        return el(
          "li",
          {},
          el(
            "button",
            {
              type: "button",
              class: "picker-item",
              disabled: shown,
              "data-testid": `picker-item-${scan.id}`,
              onclick: () => {
                this.dialog.close();
                board.add(scan.id);
              },
            },
            el("span", { class: "picker-title", text: scan.title ?? scan.id }),
            scan.builtin ? null : el("span", { class: "badge badge-custom", text: "custom" }),
            shown ? el("span", { class: "badge", text: "on board" }) : null,
            el("span", { class: "picker-desc", text: scan.description || scan.id }),
          ),
        );
      }),
    );
  },
};

const settingsDialog = {
  init() {
    const dialog = byTestId("settings-dialog");
    const cooldown = byTestId("settings-cooldown");
    const volume = byTestId("settings-volume");
    byTestId("settings-button").addEventListener("click", () => {
      cooldown.value = String(settings.cooldownS);
      volume.value = String(settings.volume);
      dialog.showModal();
    });
    cooldown.addEventListener("change", () => {
      const value = Number(cooldown.value);
      if (Number.isFinite(value) && value >= 0) {
        settings.cooldownS = Math.round(value);
        saveJson(STORE.settings, settings);
        for (const panel of board.panels) panel.renderAlerts();
      }
    });
    volume.addEventListener("input", () => {
      settings.volume = Number(volume.value);
      saveJson(STORE.settings, settings);
    });
    byTestId("settings-test-alert").addEventListener("click", () => {
      alerts.prepare();
      alerts.beep();
      toast("Test alert: this is how an entering symbol is announced.", "alert");
    });
  },
};

// ---------------------------------------------------------------------------------------------
// boot

function showFatal(text) {
  const warning = byTestId("stale-warning");
  warning.hidden = false;
  warning.dataset.kind = "down";
  $(".stale-text", warning).textContent = text;
}

async function loadDefinitions() {
  const [columns, scanList] = await Promise.all([
    listAll("/scans/columns", ["columns", "items", "data"]),
    listAll("/scans", ["scans", "items", "data"]),
  ]);
  catalog.clear();
  for (const column of columns) {
    const name = typeof column === "string" ? column : column.name ?? column.column ?? column.id;
    if (!name) continue;
    catalog.set(name, {
      name,
      kind: typeof column === "object" ? column.kind ?? "ratio" : "ratio",
      description: typeof column === "object" ? column.description ?? column.meaning ?? "" : "",
    });
  }
  scans.clear();
  for (const scan of scanList) if (scan?.id) scans.set(scan.id, scan);
}

async function boot() {
  symbolPanel.init();
  builder.init();
  picker.init();
  settingsDialog.init();
  byTestId("new-scan-button").addEventListener("click", () => builder.open("create"));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && board.openPopover) board.openPopover.closePopovers(true);
    else if (event.key === "Escape" && !symbolPanel.node.hidden && !document.querySelector("dialog[open]")) {
      symbolPanel.close();
    }
  });
  document.addEventListener("click", (event) => {
    const open = board.openPopover;
    if (open && !open.node.querySelector(".panel-tools").contains(event.target) &&
        !event.target.closest(".popover")) {
      open.closePopovers(false);
    }
  });
  for (const type of ["pointerdown", "keydown"]) {
    document.addEventListener(
      type,
      () => {
        if (alerts.audio?.state === "suspended") alerts.audio.resume().catch(() => {});
      },
      { capture: true },
    );
  }
  setInterval(() => header.tick(), 250);
  header.tick();

  for (let attempt = 0; ; attempt += 1) {
    try {
      await loadDefinitions();
      break;
    } catch (error) {
      showFatal(`Cannot load scan definitions (${error.message}); retrying…`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(10000, 500 * 2 ** attempt)));
    }
  }
  board.init();
  document.body.dataset.ready = "true";
  await loadClockSpeed();
  socket.connect();
}

boot();
