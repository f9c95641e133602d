// The dlm dashboard: polls Status and the tail of a file, shows every lock
// over time (locks.ts), and drives a session of its own through the
// TypeScript client.
import { type api, Client, Code, DlmError, type Lock, parseEndpoints, Reader, type Transports, validToken, webTransports, withToken } from "@dlm/client";

import { LockViews } from "./locks.js";

/**
 * The page long-polls Status: the server answers as soon as the lock state
 * changes, or after longPollMs, so an idle dashboard asks once per
 * longPollMs and a busy one sees each change at once, yet never more often
 * than every minPollGapMs.
 */
const longPollMs = 5000;
const minPollGapMs = 250;
/** When no leader answers (the answer cannot wait for a change), poll this often. */
const stalePollMs = 1000;
/** Each node is asked for its own role this often. */
const nodePollMs = 2000;
/** Sessions and waiters the page lists; the counts are always whole. */
const pageSize = 50;
/** How many bytes of the chosen file the page shows. */
const tailBytes = 4096;

const params = new URLSearchParams(location.search);
const endpoints = params.get("server") ? parseEndpoints(params.get("server") as string) : [location.origin];
const leaseMs = Number(params.get("lease") ?? 0) || 0;
const name = params.get("name") ?? `browser ${Math.random().toString(36).slice(2, 6)}`;

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

/**
 * The token typed into the page, for a server that requires one. It is kept
 * in sessionStorage only: it lasts while the tab is open, and never goes
 * into the URL (history, logs, Referer) or into localStorage (other tabs,
 * later visits).
 */
const tokenKey = "dlm-token";
let token = sessionStorage.getItem(tokenKey) ?? "";
/** Every call the page makes goes through these, with the current token. */
const web = webTransports();
const transports: Transports = { create: (baseUrl) => withToken(web.create(baseUrl), () => token) };

// Reads poll often, so they give up quickly and show the failure instead.
const reader = new Reader(endpoints, { transports, retryBudgetMs: 2000, attemptTimeoutMs: 1500 });
// The long poll's attempts last up to longPollMs plus their own timeout.
const pollReader = new Reader(endpoints, { transports, retryBudgetMs: longPollMs + 4000, attemptTimeoutMs: 1500 });

/** What each node said of itself at its last poll, by client URL. */
interface NodeView {
  ok: boolean;
  node?: api.NodeStatus;
  error?: string;
}
const nodeViews = new Map<string, NodeView>();
const nodeReaders = new Map<string, Reader>();
/** The node id each client URL answered with, to match members without one. */
const idByUrl = new Map<string, string>();

function urlOf(id: string): string {
  for (const [u, i] of idByUrl) {
    if (i === id) {
      return u;
    }
  }
  return "";
}

function viewOf(m: api.MemberStatus): NodeView | undefined {
  if (m.clientUrl && nodeViews.has(m.clientUrl)) {
    return nodeViews.get(m.clientUrl);
  }
  for (const [u, id] of idByUrl) {
    if (id === m.id) {
      return nodeViews.get(u);
    }
  }
  return undefined;
}
/** Set when no leader could confirm the answer, so it may be stale. */
let stale = false;

let client: Client | undefined;
let lock: Lock | undefined;
let waiting: AbortController | undefined;
let lastStatus: api.StatusResponse | undefined;

function el(tag: string, text: string, cls?: string): HTMLElement {
  const e = document.createElement(tag);
  e.textContent = text;
  if (cls) {
    e.className = cls;
  }
  return e;
}

function row(cells: (string | HTMLElement)[]): HTMLTableRowElement {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (typeof c === "string") {
      td.textContent = c;
    } else {
      td.append(c);
    }
    tr.append(td);
  }
  return tr;
}

/**
 * describe says what went wrong, in words that tell the user what to do
 * when the server wants a token (or another one). It also shows that in the
 * token field, until a call succeeds again.
 */
function describe(err: unknown): string {
  const code = err instanceof DlmError ? err.code : undefined;
  if (code === Code.Unauthenticated) {
    authProblem(token === "" ? "this server requires a token: enter it above" : "this server did not accept the token");
    return `this server requires a token (${(err as Error).message})`;
  }
  if (code === Code.PermissionDenied) {
    authProblem("the token does not allow this");
    return `the token does not allow this (${(err as Error).message})`;
  }
  return (err as Error).message;
}

function authProblem(msg: string): void {
  const m = $("auth-msg");
  m.textContent = msg;
  m.hidden = false;
  $("auth").classList.add("bad");
}

function authOK(): void {
  $("auth-msg").hidden = true;
  $("auth").classList.remove("bad");
}

function log(msg: string, error = false): void {
  (error ? console.warn : console.info)(`dlm dashboard: ${msg}`);
  const li = el("li", `${new Date().toLocaleTimeString()} ${msg}`, error ? "error" : "");
  const ul = $("log");
  ul.prepend(li);
  while (ul.children.length > 50) {
    ul.lastElementChild?.remove();
  }
}

function who(id: bigint, st: api.StatusResponse): string {
  const name = id === st.lock?.holder ? st.lock.holderName : st.sessions.find((x) => x.clientId === id)?.name;
  const mine = client !== undefined && client.clientId === id ? " (this page)" : "";
  return `#${id}${name ? ` ${name}` : ""}${mine}`;
}

/** whoIn names a session of any lock, with the label its grant carries. */
function whoIn(id: bigint, label: string): string {
  const mine = client !== undefined && client.clientId === id ? " (this page)" : "";
  return `#${id}${label ? ` ${label}` : ""}${mine}`;
}

const lockViews = new LockViews({ endpoints, transports, describe, who: whoIn });

/** more says how many a page left out ("" when none). */
function more(total: bigint | number, shown: number): string {
  const n = Number(total) - shown;
  return n > 0 ? `… ${n} more` : "";
}

function renderStatus(st: api.StatusResponse): void {
  const node = st.node;
  const members = $("members");
  members.replaceChildren();
  const list = st.members.length > 0 ? st.members : [];
  for (const m of list) {
    const view = viewOf(m);
    let role: string;
    let detail = "";
    if (view?.ok && view.node) {
      role = view.node.role;
      detail = `term ${view.node.term} · applied ${view.node.appliedIndex}`;
    } else if (view && !view.ok) {
      role = "unreachable";
      detail = "no answer";
    } else {
      role = m.leader ? "leader" : m.id === node?.id ? (node?.role ?? "") : "follower";
    }
    const tr = row([m.id, el("span", role, `role-${role}`), m.clientUrl || urlOf(m.id), m.raftAddress, m.suffrage, el("span", detail, "dim")]);
    tr.dataset.node = m.id;
    if (view?.error) {
      tr.title = view.error;
    }
    members.append(tr);
  }
  if (list.length === 0 && node) {
    members.append(row([node.id, el("span", node.role, `role-${node.role}`), endpoints.join(", "), "", "", ""]));
  }
  $("node-info").textContent = node
    ? `answered by ${node.id} (${node.role}), term ${node.term}, commit index ${node.commitIndex}` +
      (node.leaderUrl ? `, leader at ${node.leaderUrl}` : "") +
      (stale ? " — no leader confirmed this answer: it may be out of date" : "")
    : "";

  const lk = st.lock;
  const held = lk !== undefined && lk.holder !== 0n;
  $("holder").textContent = held ? who(lk.holder, st) : "free";
  $("token").textContent = held ? String(lk.token) : "–";
  $("lease-left").textContent = held ? `${lk.leaseLeftMs} ms` : "–";
  $("staged").textContent = held ? `${lk.stagedAppends} appends, ${lk.stagedBytes} bytes` : "–";
  $("last-token").textContent = lk && lk.lastToken !== 0n ? String(lk.lastToken) : "–";
  const queue = $("queue");
  const waiters = (lk?.queue ?? []).map((id) => el("li", who(id, st)));
  const queueMore = more(lk?.queueLength ?? 0, waiters.length);
  if (queueMore) {
    waiters.push(el("li", queueMore, "dim more"));
  }
  queue.replaceChildren(...waiters);
  $("queue-empty").hidden = waiters.length > 0;

  const sessions = $("sessions");
  const rows = st.sessions.map((s) => row([`#${s.clientId}`, s.name, `${s.leaseMs} ms`, `${s.leaseLeftMs} ms`]));
  const sessionsMore = more(st.sessionCount, st.sessions.length);
  if (sessionsMore) {
    const tr = row([sessionsMore, "", "", ""]);
    tr.className = "dim more";
    rows.push(tr);
  }
  sessions.replaceChildren(...rows);

  const select = $<HTMLSelectElement>("file-select");
  if (select.options.length === 0) {
    for (const f of st.files) {
      select.append(new Option(f.name, f.name));
    }
    select.value = params.get("file") ?? "file_0";
  }
}

/** The stateIndex of the last answer: the next poll waits for a later one. */
let knownIndex = 0n;
/** Aborts the waiting long poll, so the page asks again at once. */
let kick: AbortController | undefined;

/** refresh asks for a new answer now instead of waiting for a change. */
function refresh(): void {
  knownIndex = 0n;
  kick?.abort();
}

/**
 * pollOnce shows one answer: the leader's, after the lock state moves past
 * knownIndex (it alone knows the leases left), or any node's at once when no
 * leader can confirm one, so a cluster without a majority still shows. It
 * returns whether it waited on the leader (a long poll).
 */
async function pollOnce(signal: AbortSignal): Promise<boolean> {
  const file = $<HTMLSelectElement>("file-select").value || params.get("file") || "file_0";
  try {
    let st: api.StatusResponse;
    try {
      st = await pollReader.status({ consistent: true, pageSize, knownStateIndex: knownIndex, waitMs: longPollMs, signal });
      stale = false;
    } catch {
      if (signal.aborted) {
        return true;
      }
      stale = true;
      st = await reader.status({ pageSize });
    }
    const tail = await reader.readFileRange(file, -tailBytes);
    if (st.stateIndex !== knownIndex) {
      lockViews.changed();
    }
    knownIndex = st.stateIndex;
    lastStatus = st;
    renderStatus(st);
    const text = new TextDecoder().decode(tail.data);
    const pre = $("file-tail");
    if (pre.textContent !== text) {
      pre.textContent = text;
    }
    $("file-size").textContent = `${tail.size} bytes${tail.offset > 0n ? `, showing the last ${tail.data.length}` : ""}`;
    $("conn").textContent = "live";
    $("conn").className = "ok";
    authOK();
    return !stale;
  } catch (err) {
    if (signal.aborted) {
      return true;
    }
    const code = err instanceof DlmError ? err.code : undefined;
    const auth = code === Code.Unauthenticated || code === Code.PermissionDenied;
    $("conn").textContent = auth ? describe(err) : `unreachable: ${describe(err)}`;
    $("conn").className = "bad";
    return false;
  }
}

async function pollLoop(): Promise<void> {
  for (;;) {
    const start = Date.now();
    kick = new AbortController();
    const waited = await pollOnce(kick.signal);
    const kicked = kick.signal.aborted;
    kick = undefined;
    if (!kicked) {
      const gap = waited ? minPollGapMs : stalePollMs;
      await new Promise((r) => setTimeout(r, Math.max(0, gap - (Date.now() - start))));
    }
  }
}

/** pollNodes asks every known node for its own view, to show its real role. */
async function pollNodes(): Promise<void> {
  for (;;) {
    const start = Date.now();
    const urls = new Set(endpoints);
    for (const m of lastStatus?.members ?? []) {
      if (m.clientUrl) {
        urls.add(m.clientUrl);
      }
    }
    await Promise.all(
      [...urls].map(async (u) => {
        let r = nodeReaders.get(u);
        if (r === undefined) {
          r = new Reader([u], { transports, retryBudgetMs: 400, attemptTimeoutMs: 400 });
          nodeReaders.set(u, r);
        }
        try {
          // Only the node's own part is read: the smallest page.
          const st = await r.status({ pageSize: 1 });
          nodeViews.set(u, { ok: true, node: st.node });
          if (st.node?.id) {
            idByUrl.set(u, st.node.id);
          }
        } catch (err) {
          nodeViews.set(u, { ok: false, error: describe(err) });
        }
      }),
    );
    if (lastStatus) {
      renderStatus(lastStatus);
    }
    await new Promise((r) => setTimeout(r, Math.max(0, nodePollMs - (Date.now() - start))));
  }
}

function setState(text: string, cls: string): void {
  const s = $("me-state");
  s.textContent = text;
  s.className = cls;
  const holding = lock?.state === "held";
  $<HTMLButtonElement>("acquire").disabled = holding || waiting !== undefined;
  $<HTMLButtonElement>("cancel").disabled = waiting === undefined;
  $<HTMLButtonElement>("release").disabled = !holding;
  $<HTMLButtonElement>("abort").disabled = !holding;
  $<HTMLButtonElement>("append").disabled = !holding;
}

async function session(): Promise<Client> {
  client ??= await Client.open(endpoints, { transports, name, leaseMs, pollWaitMs: 2000 });
  return client;
}

async function acquire(): Promise<void> {
  waiting = new AbortController();
  setState("opening a session…", "waiting");
  try {
    const c = await session();
    setState(`waiting in the queue as #${c.clientId}`, "waiting");
    const lk = await c.acquire({ signal: waiting.signal });
    lock = lk;
    lk.addEventListener("lost", (e) => {
      log(`lost the lock: ${((e as CustomEvent).detail as Error).message}`, true);
      setState(`lost the lock (token ${lk.token})`, "lost");
    });
    waiting = undefined;
    setState(`holding the lock, token ${lk.token}`, "holding");
    log(`acquired, token ${lk.token}`);
  } catch (err) {
    waiting = undefined;
    setState("idle", "");
    log(`acquire: ${describe(err)}`, true);
  }
}

async function end(abort: boolean): Promise<void> {
  const lk = lock;
  if (!lk) {
    return;
  }
  try {
    await (abort ? lk.abort() : lk.release());
    log(`${abort ? "aborted" : "released"} token ${lk.token}`);
    setState("idle", "");
  } catch (err) {
    log(`${abort ? "abort" : "release"}: ${describe(err)}`, true);
    setState(lk.state === "lost" ? `lost the lock (token ${lk.token})` : `holding the lock, token ${lk.token}`, lk.state === "lost" ? "lost" : "holding");
  }
}

async function append(): Promise<void> {
  const lk = lock;
  const input = $<HTMLInputElement>("append-text");
  const file = $<HTMLSelectElement>("file-select").value || "file_0";
  if (!lk || input.value === "") {
    return;
  }
  const text = `${input.value}\n`;
  try {
    await lk.append(file, text);
    log(`staged ${text.length} bytes for ${file}`);
    input.value = "";
  } catch (err) {
    log(`append: ${describe(err)}`, true);
  }
}

$("server").textContent = endpoints.join(", ");

/** useToken makes the typed token the one every later call carries. */
function useToken(): void {
  const input = $<HTMLInputElement>("auth-token");
  const t = input.value.trim();
  if (t !== "" && !validToken(t)) {
    authProblem("a token is visible ASCII characters without spaces");
    return;
  }
  token = t;
  if (t === "") {
    sessionStorage.removeItem(tokenKey);
  } else {
    sessionStorage.setItem(tokenKey, t);
  }
  authOK();
  $("auth-state").textContent = t === "" ? "none" : "set for this tab";
  refresh();
}
$<HTMLInputElement>("auth-token").value = token;
$("auth-state").textContent = token === "" ? "none" : "set for this tab";
$("auth-token").addEventListener("keydown", (e) => {
  if ((e as KeyboardEvent).key === "Enter") {
    useToken();
  }
});
$("auth-use").addEventListener("click", useToken);
$("auth-forget").addEventListener("click", () => {
  $<HTMLInputElement>("auth-token").value = "";
  useToken();
});
$("acquire").addEventListener("click", () => void acquire());
$("cancel").addEventListener("click", () => waiting?.abort());
$("release").addEventListener("click", () => void end(false));
$("abort").addEventListener("click", () => void end(true));
$("append").addEventListener("click", () => void append());
$("append-text").addEventListener("keydown", (e) => {
  if ((e as KeyboardEvent).key === "Enter") {
    void append();
  }
});
$("file-select").addEventListener("change", () => refresh());
// A page that goes away without releasing (its tab closed, the browser
// killed) stops its keepalive: the service takes the lock away when the
// session's lease runs out (?lease=MS makes that quick) and discards what the
// page had staged.
setState("no session", "");
void pollLoop();
void pollNodes();
void lockViews.run();

// For tests and the curious: the page's state.
Object.assign(window, { dlm: { get client() { return client; }, get lock() { return lock; }, get status() { return lastStatus; }, get locks() { return lockViews.state; }, refresh } });
