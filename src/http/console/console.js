// The keyvalue console: plain JavaScript over the JSON API (docs/API.md)
// and /metrics. No framework and no build step; kvserver embeds this file.
"use strict";

const PAGE = 100;          // entries per page of the key tree
const DELIMITER = "/";     // the tree groups keys by this
const SAMPLES = 60;        // dashboard points kept (one a second)
const LEASE_PAGE = 50;     // leases per page of the leases tab
const LEASE_KEYS = 10;     // keys shown with each lease at first
const KEY_PAGE = 100;      // keys a lease's "more keys" button adds

const state = {
  token: sessionStorage.getItem("kv-token") || "",
  role: "readwrite",       // what the token may do: "read" or "readwrite"
  scope: "",               // the prefix the token is confined to
  prefix: "",              // the tree's current prefix (a byte string)
  next: null,              // the `after` of the tree's next page (bytes)
  loaded: null,            // the key open in the editor, as loaded
  leasesNext: null,        // the `after` of the leases tab's next page
  watch: null,             // AbortController of the running watch
};

const $ = (id) => document.getElementById(id);

// ---- talking to the server ----

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h.Authorization = "Bearer " + state.token;
  return h;
}

// ---- keys are bytes ----
// A key may be any bytes, UTF-8 or not. Here a key is a byte string: a
// string of one character (0-255) per byte, so that comparing, slicing and
// startsWith work on bytes and in the server's order. It is read from a
// JSON field (text, or base64 when `{field}_encoding` says so), sent as
// %XX in paths and queries, and shown by showKey.

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function fromText(text) {
  return Array.from(utf8.encode(text), (b) => String.fromCharCode(b)).join("");
}

function bytesOf(raw) {
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

// The key in object[field], or null when the field is null.
function keyOf(object, field) {
  const text = object[field];
  if (text === null || text === undefined) return null;
  return object[field + "_encoding"] === "base64" ? atob(text) : fromText(text);
}

// A key as a person reads and types it: UTF-8 text as it is; a key with
// bytes that are not UTF-8, control characters or a backslash is escaped
// (\xff for such a byte, \\ for a backslash), so that parseKey gives the
// same bytes back.
function showKey(raw) {
  const bytes = bytesOf(raw);
  try {
    const text = strictUtf8.decode(bytes);
    if (!/[\\\x00-\x1f\x7f]/.test(text)) return text;
  } catch (_) {
    // Not UTF-8: escaped below.
  }
  let out = "";
  for (let at = 0; at < bytes.length;) {
    const b = bytes[at];
    const size = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3
      : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    let char = null;
    if (size === 1) {
      if (b >= 0x20 && b !== 0x7f) char = String.fromCharCode(b);
    } else if (size > 1) {
      try { char = strictUtf8.decode(bytes.subarray(at, at + size)); } catch (_) { char = null; }
    }
    if (char === null) {
      out += "\\x" + b.toString(16).padStart(2, "0");
      at += 1;
    } else {
      out += char === "\\" ? "\\\\" : char;
      at += size;
    }
  }
  return out;
}

// The bytes a person typed: text as UTF-8, with \xNN for a byte and \\
// for a backslash (as showKey writes them).
function parseKey(text) {
  if (!text.includes("\\")) return fromText(text);
  let out = "";
  for (let at = 0; at < text.length;) {
    if (text.startsWith("\\\\", at)) {
      out += "\\";
      at += 2;
    } else if (text[at] === "\\" && /^x[0-9a-fA-F]{2}$/.test(text.slice(at + 1, at + 4))) {
      out += String.fromCharCode(parseInt(text.slice(at + 2, at + 4), 16));
      at += 4;
    } else {
      const char = String.fromCodePoint(text.codePointAt(at));
      out += fromText(char);
      at += char.length;
    }
  }
  return out;
}

// A byte string percent-encoded, every byte but letters, digits and -_.~
function pct(raw) {
  let out = "";
  for (const c of raw) {
    out += /[A-Za-z0-9\-_.~]/.test(c) ? c
      : "%" + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

// A query string of byte strings (numbers and flags are ASCII: their own bytes).
function query(params) {
  return Object.entries(params).map(([name, value]) => name + "=" + pct(value)).join("&");
}

function keyPath(raw) {
  return "/v1/kv/" + pct(raw);
}

// fetch() that answers {ok, status, body}; a 401 opens the token dialog.
// Lease ids are random 63-bit integers, beyond what a JavaScript number
// holds exactly (2^53): an integer too large to be exact is read from its
// source text, as a string, so it is shown and sent back unchanged.
function parseJson(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source)
      ? context.source
      : value);
}

async function api(method, path, body) {
  const init = { method, headers: headers() };
  if (body !== undefined) init.body = body;
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    return { ok: false, status: 0, body: { error: "cannot reach the server: " + error } };
  }
  let parsed = null;
  const text = await response.text();
  try { parsed = text ? parseJson(text) : null; } catch (_) { parsed = { error: text }; }
  if (response.status === 401) askToken(parsed && parsed.error);
  return { ok: response.ok, status: response.status, body: parsed };
}

function say(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = kind || "info";
  box.hidden = !text;
}

// ---- token and identity ----

function askToken(why) {
  const dialog = $("token-dialog");
  $("token-why").textContent = why || "This server needs a token.";
  $("token-input").value = "";
  if (!dialog.open) dialog.showModal();
}

async function identify() {
  const answer = await api("GET", "/v1/whoami");
  if (!answer.ok) {
    $("identity").textContent = "no valid token";
    return false;
  }
  state.role = answer.body.role;
  state.scope = keyOf(answer.body, "prefix") || "";
  const readOnly = state.role === "read";
  let text = answer.body.auth ? "token: " + state.role : "no token needed";
  if (state.scope) text += ", keys under " + JSON.stringify(showKey(state.scope));
  $("identity").textContent = text;
  $("identity").className = readOnly ? "read-only" : "";
  for (const id of ["save", "delete", "new-key"]) {
    const button = $(id);
    button.disabled = readOnly;
    button.title = readOnly ? "read-only token: may not write" : "";
  }
  $("write-note").textContent = readOnly
    ? "Read-only token: this console may view keys but may not create, change or delete them."
    : "Save is a compare-and-set on the revision loaded: a change made meanwhile is reported, never overwritten.";
  return true;
}

// ---- the key tree ----

function leaf(raw) {
  return showKey(raw.slice(state.prefix.length) || raw);
}

// An entry of the tree: its key (or group) as bytes in `kvKey`, and as
// shown in data-value.
function treeItem(label, kind, raw) {
  const item = document.createElement("li");
  item.setAttribute("role", "option");
  item.tabIndex = -1;
  item.dataset.kind = kind;
  item.dataset.value = showKey(raw);
  item.kvKey = raw;
  item.className = kind;
  item.textContent = label;
  item.addEventListener("click", () => openItem(item));
  return item;
}

async function loadTree(prefix, append) {
  if (!append) {
    state.prefix = prefix;
    state.next = null;
    $("tree").replaceChildren();
    renderBreadcrumbs();
    $("prefix-input").value = showKey(prefix);
  }
  const params = { prefix: state.prefix, delimiter: DELIMITER, limit: String(PAGE), keys_only: "true" };
  if (append && state.next !== null) params.after = state.next;
  const answer = await api("GET", "/v1/kv?" + query(params));
  if (!answer.ok) {
    say("Cannot list " + JSON.stringify(showKey(state.prefix)) + ": " + answer.body.error, "error");
    return;
  }
  const tree = $("tree");
  // Prefixes and keys arrive in key order each; merge them (byte strings
  // compare in byte order, as the server sorts).
  const entry = (raw, kind) => ({ at: raw, item: treeItem(leaf(raw), kind, raw) });
  const entries = answer.body.prefixes.map((p) => entry(keyOf(p, "prefix"), "prefix"))
    .concat(answer.body.kvs.map((kv) => entry(keyOf(kv, "key"), "key")));
  entries.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  for (const item of entries) tree.appendChild(item.item);
  state.next = keyOf(answer.body, "next");
  $("more").hidden = !answer.body.more;
  if (!tree.children.length) {
    const empty = document.createElement("li");
    empty.className = "empty";
    empty.textContent = "(no keys)";
    tree.appendChild(empty);
  }
  tree.setAttribute("aria-busy", "false");
}

function renderBreadcrumbs() {
  const crumbs = $("breadcrumbs");
  crumbs.replaceChildren();
  const parts = [""];
  let at = 0;
  while (true) {
    const found = state.prefix.indexOf(DELIMITER, at);
    if (found < 0) break;
    at = found + DELIMITER.length;
    parts.push(state.prefix.slice(0, at));
  }
  if (state.prefix && parts[parts.length - 1] !== state.prefix) parts.push(state.prefix);
  for (const part of parts) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = part === "" ? "(root)" : showKey(leafOf(part));
    button.addEventListener("click", () => loadTree(part));
    li.appendChild(button);
    crumbs.appendChild(li);
  }
}

function leafOf(prefix) {
  const trimmed = prefix.endsWith(DELIMITER) ? prefix.slice(0, -DELIMITER.length) : prefix;
  const at = trimmed.lastIndexOf(DELIMITER);
  return trimmed.slice(at + 1) + (prefix.endsWith(DELIMITER) ? DELIMITER : "");
}

function openItem(item) {
  if (!item || !item.dataset.kind) return;
  select(item);
  if (item.dataset.kind === "prefix") {
    loadTree(item.kvKey).then(() => focusFirst());
  } else {
    showTab("key");
    loadKey(item.kvKey);
  }
}

function select(item) {
  for (const other of $("tree").querySelectorAll("[aria-selected=true]")) {
    other.setAttribute("aria-selected", "false");
  }
  item.setAttribute("aria-selected", "true");
  item.focus();
}

function focusFirst() {
  const first = $("tree").querySelector("[role=option]");
  if (first) select(first);
}

function up() {
  if (!state.prefix) return;
  const trimmed = state.prefix.endsWith(DELIMITER)
    ? state.prefix.slice(0, -DELIMITER.length) : state.prefix;
  const at = trimmed.lastIndexOf(DELIMITER);
  loadTree(at < 0 ? "" : trimmed.slice(0, at + DELIMITER.length)).then(() => focusFirst());
}

function treeKeys(event) {
  const items = Array.from($("tree").querySelectorAll("[role=option]"));
  const current = items.indexOf(document.activeElement);
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    const step = event.key === "ArrowDown" ? 1 : -1;
    const next = items[Math.max(0, Math.min(items.length - 1, current + step))];
    if (next) select(next);
  } else if (event.key === "Enter" || event.key === "ArrowRight") {
    event.preventDefault();
    openItem(items[current]);
  } else if (event.key === "Backspace" || event.key === "ArrowLeft") {
    event.preventDefault();
    up();
  } else if (event.key === "Home") {
    event.preventDefault();
    focusFirst();
  }
}

// ---- one key ----

function decodeValue(kv) {
  if (kv.value_encoding === "base64") {
    const raw = atob(kv.value);
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }
  return new TextEncoder().encode(kv.value);
}

function hexDump(bytes) {
  const lines = [];
  for (let at = 0; at < bytes.length; at += 16) {
    const row = Array.from(bytes.slice(at, at + 16));
    const hex = row.map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const text = row.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(at.toString(16).padStart(8, "0") + "  " + hex.padEnd(48) + "  " + text);
  }
  return lines.join("\n") || "(empty)";
}

function renderValue() {
  const mode = $("view-mode").value;
  const kv = state.loaded;
  const editing = mode === "text" && !(kv && kv.value_encoding);
  $("value").hidden = !editing;
  $("value-view").hidden = editing;
  if (editing) return;
  if (!kv) {
    $("value-view").textContent = "";
    return;
  }
  if (mode === "hex" || kv.value_encoding) {
    $("value-view").textContent = hexDump(decodeValue(kv));
  } else {
    try {
      $("value-view").textContent = JSON.stringify(JSON.parse(kv.value), null, 2);
    } catch (error) {
      $("value-view").textContent = "Not JSON (" + error.message + "):\n" + kv.value;
    }
  }
}

function showMeta(kv) {
  $("meta-create").textContent = kv ? kv.create_revision : "–";
  $("meta-mod").textContent = kv ? kv.mod_revision : "–";
  $("meta-version").textContent = kv ? kv.version : "–";
  $("meta-lease").textContent = kv ? (kv.lease ? String(kv.lease) : "none") : "–";
}

// Opens the key of bytes `raw` in the editor; state.loaded.raw is its key.
async function loadKey(raw) {
  const shown = JSON.stringify(showKey(raw));
  $("conflict").hidden = true;
  $("key-input").value = showKey(raw);
  const answer = await api("GET", keyPath(raw));
  if (answer.status === 404) {
    state.loaded = null;
    showMeta(null);
    $("value").value = "";
    renderValue();
    say("No key " + shown + ": saving creates it.", "info");
    return;
  }
  if (!answer.ok) {
    say("Cannot read " + shown + ": " + answer.body.error, "error");
    return;
  }
  const kv = answer.body;
  kv.raw = keyOf(kv, "key");
  state.loaded = kv;
  showMeta(kv);
  $("value").value = kv.value_encoding ? "" : kv.value;
  renderValue();
  say("Loaded " + shown + " at revision " + kv.mod_revision + ".", "info");
}

function newKey() {
  state.loaded = null;
  showMeta(null);
  $("key-input").value = showKey(state.prefix);
  $("value").value = "";
  $("ttl").value = "";
  $("view-mode").value = "text";
  renderValue();
  $("conflict").hidden = true;
  $("key-input").focus();
  say("New key: saving creates it, only if it does not exist yet.", "info");
}

function showConflict(body) {
  const box = $("conflict");
  const current = body.current;
  let text = "Conflict: " + body.error + ". Your change was not saved.";
  if (current) {
    text += " The key is now at revision " + current.mod_revision + " with value " +
      JSON.stringify(current.value) + ".";
  } else {
    text += " The key no longer exists.";
  }
  box.textContent = text + " Load the key to see it, then edit again.";
  box.hidden = false;
  say("Not saved: the key changed since it was loaded.", "error");
}

async function save(event) {
  event.preventDefault();
  const key = parseKey($("key-input").value);
  const shown = JSON.stringify(showKey(key));
  if (!key) {
    say("Give a key.", "error");
    return;
  }
  const loadedHere = state.loaded && state.loaded.raw === key;
  // A compare-and-set on the revision loaded; a new key must not exist yet.
  const params = { expect_revision: String(loadedHere ? state.loaded.mod_revision : 0) };
  const ttl = $("ttl").value.trim();
  if (ttl) params.ttl = fromText(ttl);
  const answer = await api("PUT", keyPath(key) + "?" + query(params), $("value").value);
  if (answer.status === 409) {
    showConflict(answer.body);
    return;
  }
  if (!answer.ok) {
    say("Not saved: " + answer.body.error, "error");
    return;
  }
  say("Saved " + shown + " at revision " + answer.body.revision + ".", "ok");
  await loadKey(key);
  say("Saved " + shown + " at revision " + answer.body.revision + ".", "ok");
}

async function remove() {
  const key = parseKey($("key-input").value);
  const shown = JSON.stringify(showKey(key));
  if (!key || !confirm("Delete " + shown + "?")) return;
  const expect = state.loaded && state.loaded.raw === key
    ? "?expect_revision=" + state.loaded.mod_revision : "";
  const answer = await api("DELETE", keyPath(key) + expect);
  if (answer.status === 409) {
    showConflict(answer.body);
    return;
  }
  if (!answer.ok) {
    say("Not deleted: " + answer.body.error, "error");
    return;
  }
  state.loaded = null;
  showMeta(null);
  $("value").value = "";
  renderValue();
  say(answer.body.deleted ? "Deleted " + shown + "." : "No such key.", "ok");
  loadTree(state.prefix);
}

// ---- watch (Server-Sent Events read with fetch, so a token can go along) ----

async function startWatch(event) {
  event.preventDefault();
  stopWatch();
  const prefix = parseKey($("watch-prefix").value);
  const controller = new AbortController();
  state.watch = controller;
  $("watch-start").disabled = true;
  $("watch-stop").disabled = false;
  let lastId = null;
  while (state.watch === controller) {
    const h = headers({ Accept: "text/event-stream" });
    if (lastId !== null) h["Last-Event-ID"] = lastId;
    let response;
    try {
      response = await fetch("/v1/watch?" + query({ prefix }),
        { headers: h, signal: controller.signal });
    } catch (_) {
      if (state.watch !== controller) return;
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({ error: response.statusText }));
      $("watch-state").textContent = "Watch refused: " + body.error;
      if (response.status === 401) askToken(body.error);
      stopWatch();
      return;
    }
    $("watch-state").textContent = "Watching " + (prefix ? JSON.stringify(showKey(prefix)) : "every key") + ".";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields = {};
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const name = colon < 0 ? line : line.slice(0, colon);
            const data = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            fields[name] = fields[name] === undefined ? data : fields[name] + "\n" + data;
          }
          if (fields.id !== undefined) lastId = fields.id;
          if (fields.data !== undefined) logChange(fields.event, parseJson(fields.data));
        }
      }
    } catch (_) {
      // Aborted, or the connection broke: resume after the last id.
    }
    if (state.watch === controller) {
      $("watch-state").textContent = "Reconnecting…";
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

function logChange(kind, change) {
  const item = document.createElement("li");
  item.className = "change " + kind;
  if (kind === "error") {
    item.textContent = "error: " + change.error;
  } else {
    const value = kind === "put" ? " = " + JSON.stringify(change.kv.value) : "";
    item.textContent = change.revision + " " + kind.toUpperCase() + " " + showKey(keyOf(change.kv, "key")) + value;
  }
  const log = $("watch-log");
  log.prepend(item);
  while (log.children.length > 200) log.lastChild.remove();
}

function stopWatch() {
  if (state.watch) state.watch.abort();
  state.watch = null;
  $("watch-start").disabled = false;
  $("watch-stop").disabled = true;
  $("watch-state").textContent = "Not watching.";
}

// ---- leases ----

// Every lease, a page at a time (GET /v1/leases), each with its first
// keys; "more keys" pages through one lease's keys (GET /v1/leases/{id}).
// Nothing is loaded beyond what is shown, however many leases there are.
async function refreshLeases(append) {
  const table = $("leases");
  const body = table.querySelector("tbody");
  const params = { limit: String(LEASE_PAGE), keys: String(LEASE_KEYS) };
  if (append === true && state.leasesNext !== null) params.after = String(state.leasesNext);
  else body.replaceChildren();
  table.setAttribute("aria-busy", "true");
  const answer = await api("GET", "/v1/leases?" + query(params));
  table.setAttribute("aria-busy", "false");
  if (!answer.ok) {
    say("Cannot list the leases: " + answer.body.error, "error");
    return;
  }
  for (const lease of answer.body.leases) leaseRow(body, lease);
  if (!body.rows.length) {
    const cell = body.insertRow().insertCell();
    cell.colSpan = 4;
    cell.textContent = "No leases.";
  }
  state.leasesNext = answer.body.next;
  $("leases-more").hidden = !answer.body.more;
}

function keyButton(raw) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link";
  button.textContent = showKey(raw);
  button.addEventListener("click", () => { showTab("key"); loadKey(raw); });
  return button;
}

function leaseRow(body, lease) {
  const row = body.insertRow();
  row.dataset.lease = String(lease.id);
  const id = document.createElement("th");
  id.scope = "row";
  id.textContent = String(lease.id);
  row.appendChild(id);
  row.insertCell().textContent = (lease.ttl_ms / 1000) + " s";
  row.insertCell().textContent = (lease.remaining_ms / 1000).toFixed(1) + " s";
  const cell = row.insertCell();
  const keys = document.createElement("ul");
  keys.className = "lease-keys";
  keys.setAttribute("aria-label", "Keys of lease " + lease.id);
  cell.appendChild(keys);
  const addKeys = (list) => {
    for (const entry of list) {
      const item = document.createElement("li");
      item.appendChild(keyButton(keyOf(entry, "key")));
      keys.appendChild(item);
    }
  };
  addKeys(lease.keys);
  if (!lease.more_keys) {
    if (!lease.keys.length) cell.insertBefore(document.createTextNode("(no keys)"), keys);
    return;
  }
  const more = document.createElement("button");
  more.type = "button";
  more.textContent = "More keys";
  more.setAttribute("aria-label", "More keys of lease " + lease.id);
  // A page cut at its byte bound may hold no key of this lease yet.
  const lastOf = (keys) => keyOf(keys[keys.length - 1], "key");
  let last = lease.keys.length ? lastOf(lease.keys) : "";
  more.addEventListener("click", async () => {
    const answer = await api("GET", "/v1/leases/" + lease.id + "?" + query({ limit: String(KEY_PAGE), after: last }));
    if (!answer.ok) {
      say("Cannot list the keys of lease " + lease.id + ": " + answer.body.error, "error");
      return;
    }
    addKeys(answer.body.keys);
    if (answer.body.keys.length) last = lastOf(answer.body.keys);
    more.hidden = !answer.body.more_keys;
  });
  cell.appendChild(more);
}

// ---- dashboard ----

const series = { rps: [], p50: [], p99: [], keys: [], disk: [], commits: [] };
let previous = null;

// The samples of a Prometheus/OpenMetrics text page: [{name, labels, value}].
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    if (match[3]) {
      for (const pair of match[3].matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) {
        labels[pair[1]] = pair[2];
      }
    }
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

function snapshot(samples) {
  const shot = { requests: 0, buckets: new Map(), keys: 0, disk: 0, commits: 0 };
  for (const s of samples) {
    // The dashboard's own scrapes are left out.
    if (s.labels.route === "/metrics") continue;
    if (s.name === "kv_requests_total" || s.name === "kv_http_requests_total") {
      shot.requests += s.value;
    } else if (s.name === "kv_request_duration_seconds_bucket" ||
               s.name === "kv_http_request_duration_seconds_bucket") {
      const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
      shot.buckets.set(le, (shot.buckets.get(le) || 0) + s.value);
    } else if (s.name === "kv_keys") {
      shot.keys = s.value;
    } else if (s.name === "kv_store_disk_bytes") {
      shot.disk = s.value;
    } else if (s.name === "kv_store_commits_total") {
      shot.commits = s.value;
    }
  }
  shot.at = performance.now();
  return shot;
}

// The q-quantile of the requests between two snapshots, from cumulative
// buckets (the bucket's upper bound, as Prometheus' histogram_quantile).
function quantile(q, before, after) {
  const bounds = Array.from(after.buckets.keys()).sort((a, b) => a - b);
  const counts = bounds.map((le) => after.buckets.get(le) - (before.buckets.get(le) || 0));
  const total = counts[counts.length - 1] || 0;
  if (!total) return 0;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    if (counts[i] >= rank) return bounds[i] === Infinity ? bounds[i - 1] || 0 : bounds[i];
  }
  return 0;
}

function push(list, value) {
  list.push(value);
  while (list.length > SAMPLES) list.shift();
}

function draw(id, lists, colors) {
  const canvas = $(id);
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const top = Math.max(1e-9, ...lists.flat());
  lists.forEach((list, index) => {
    context.strokeStyle = colors[index];
    context.lineWidth = 2;
    context.beginPath();
    list.forEach((value, i) => {
      const x = (i / (SAMPLES - 1)) * width;
      const y = height - 4 - (value / top) * (height - 8);
      if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
    });
    context.stroke();
  });
}

function human(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(1) + " G";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + " M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " k";
  return String(Math.round(n * 10) / 10);
}

async function tick() {
  let text;
  try {
    const response = await fetch("/metrics");
    if (!response.ok) return;
    text = await response.text();
  } catch (_) {
    return;
  }
  const now = snapshot(parseMetrics(text));
  if (previous) {
    const seconds = Math.max(0.001, (now.at - previous.at) / 1000);
    push(series.rps, Math.max(0, now.requests - previous.requests) / seconds);
    push(series.p50, quantile(0.5, previous, now) * 1000);
    push(series.p99, quantile(0.99, previous, now) * 1000);
    push(series.keys, now.keys);
    push(series.disk, now.disk);
    push(series.commits, Math.max(0, now.commits - previous.commits) / seconds);
    const last = (list) => list[list.length - 1];
    $("dash-rps").textContent = human(last(series.rps));
    $("dash-latency").textContent = last(series.p50).toFixed(2) + " / " + last(series.p99).toFixed(2);
    $("dash-keys").textContent = human(now.keys);
    $("dash-disk").textContent = human(now.disk) + "B";
    $("dash-commits").textContent = human(last(series.commits));
    draw("chart-rps", [series.rps], ["#2563eb"]);
    draw("chart-latency", [series.p50, series.p99], ["#16a34a", "#dc2626"]);
    draw("chart-keys", [series.keys], ["#7c3aed"]);
    draw("chart-disk", [series.disk], ["#ea580c"]);
    draw("chart-commits", [series.commits], ["#0891b2"]);
  }
  previous = now;
}

// ---- tabs ----

function showTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab.id === "tab-" + name;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !selected;
  }
  if (name === "leases") refreshLeases(false);
}

function tabKeys(event) {
  const tabs = Array.from(document.querySelectorAll("[role=tab]"));
  const at = tabs.indexOf(document.activeElement);
  if (at < 0 || (event.key !== "ArrowRight" && event.key !== "ArrowLeft")) return;
  const next = tabs[(at + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
  showTab(next.id.slice(4));
  next.focus();
}

// ---- start ----

async function start() {
  $("jump").addEventListener("submit", (e) => { e.preventDefault(); loadTree(parseKey($("prefix-input").value)); });
  $("tree").addEventListener("keydown", treeKeys);
  $("tree").addEventListener("focus", (e) => { if (e.target === $("tree")) focusFirst(); });
  $("more").addEventListener("click", () => loadTree(state.prefix, true));
  $("editor").addEventListener("submit", save);
  $("load").addEventListener("click", () => loadKey(parseKey($("key-input").value)));
  $("new-key").addEventListener("click", newKey);
  $("delete").addEventListener("click", remove);
  $("view-mode").addEventListener("change", renderValue);
  $("watch-form").addEventListener("submit", startWatch);
  $("watch-stop").addEventListener("click", stopWatch);
  $("leases-refresh").addEventListener("click", () => refreshLeases(false));
  $("leases-more").addEventListener("click", () => refreshLeases(true));
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => showTab(tab.id.slice(4)));
  }
  document.querySelector("[role=tablist]").addEventListener("keydown", tabKeys);
  $("token-button").addEventListener("click", () => askToken("Give a token (empty: none)."));
  $("token-dialog").addEventListener("close", async () => {
    if ($("token-dialog").returnValue !== "save") return;
    state.token = $("token-input").value.trim();
    sessionStorage.setItem("kv-token", state.token);
    if (await identify()) loadTree(state.scope);
  });
  if (await identify()) await loadTree(state.scope);
  // The browser's own clock for "first page shown" (docs/PERFORMANCE.md).
  performance.mark("kv-first-page");
  renderValue();
  tick();
  setInterval(tick, 1000);
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", start);
