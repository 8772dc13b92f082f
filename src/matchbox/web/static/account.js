// Who trades in the dashboard. With API keys (the default) a key, kept in localStorage and taken
// from a #key=… link, names the account: orders, cancels and account reads send it as
// Authorization: Bearer. In open mode (GET /health says "auth": "open") there are no keys: the
// account is the name typed in the ticket, sent in the body or as ?account=.
//
// Beside the balance and positions it reads the account's fills (GET /account/trades, from the
// database, so a moment behind the positions) and each held market's last trade price (its
// ticker), for the fills table (with the fee each fill paid) and the P&L of each position (pnl.js).

import { amount, clock, dollars, schemeOf, signedDollars } from "./format.js";
import { api, el } from "./http.js";
import { positionPnl } from "./pnl.js";

const KEY_STORAGE = "matchbox.key";
const MONEY = ["total", "reserved", "free"];
const FILLS_READ = 1000; // the most a page holds: the P&L needs every fill of a held market
const FILLS_SHOWN = 50;

const $ = (selector) => document.querySelector(selector);

export class Session {
  // onChange(what): "login", "logout" or "update", after the session changed.
  constructor(onChange) {
    this.mode = null; // "keys" or "open", once /health answered
    this.key = localStorage.getItem(KEY_STORAGE);
    this.account = null; // keys: the key's account, once the API took the key; open: the ticket's name
    this.balance = null; // {account, total, reserved, free} in cents
    this.positions = [];
    this.fills = []; // the account's trades, newest first
    this.fillsProblem = ""; // why they could not be read
    this.lastPrices = new Map(); // market id -> its last trade price (null: none yet)
    this.problem = ""; // why the key was refused, for the login box
    this.onChange = onChange;
    this.generation = 0; // bumped by every change of account: answers about an older one are dropped
  }

  // A #key=… in the address is kept, then removed from the address bar (so from the history
  // and from any link copied out of it); the fragment's other parameters stay. True if found.
  takeKeyFromUrl() {
    const params = new URLSearchParams(location.hash.slice(1));
    const key = params.get("key")?.trim();
    if (key === undefined) return false;
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
    if (!key) return false;
    this.key = key;
    localStorage.setItem(KEY_STORAGE, key);
    return true;
  }

  get open() {
    return this.mode === "open";
  }

  get ready() {
    return this.account !== null && (this.open || this.key !== null);
  }

  async detectMode() {
    const { ok, body } = await api("health");
    if (ok) this.mode = body?.auth === "open" ? "open" : "keys";
    return ok;
  }

  // A request as this account: its key in keys mode.
  request(path, options = {}) {
    const headers = { ...(options.headers ?? {}) };
    if (!this.open && this.key) headers.Authorization = `Bearer ${this.key}`;
    return api(path, { ...options, headers });
  }

  // The path of one of the account's own resources: in open mode it names the account.
  own(path) {
    if (!this.open) return path;
    return `${path}${path.includes("?") ? "&" : "?"}account=${encodeURIComponent(this.account ?? "")}`;
  }

  async logIn(key) {
    const generation = ++this.generation;
    const { status, ok, body } = await api("account", { headers: { Authorization: `Bearer ${key}` } });
    if (generation !== this.generation) return false;
    if (!ok) {
      if (status === 401) {
        this.forget();
        this.problem = "That key was refused: check it, or ask the admin for a new one.";
      } else {
        this.problem = `${status ? `${status}: ` : ""}${body?.error?.message ?? "could not log in"}`;
      }
      this.onChange("update");
      return false;
    }
    this.key = key;
    localStorage.setItem(KEY_STORAGE, key);
    Object.assign(this, { account: body.account, balance: body, positions: [], fills: [], problem: "" });
    this.onChange("login");
    this.refresh();
    return true;
  }

  logOut(problem = "") {
    this.generation += 1;
    this.forget();
    this.problem = problem;
    this.onChange("logout");
  }

  forget() {
    Object.assign(this, { key: null, account: null, balance: null, positions: [], fills: [] });
    localStorage.removeItem(KEY_STORAGE);
  }

  // Open mode: the account is the ticket's.
  useName(name) {
    if (!this.open || name === this.account) return;
    this.generation += 1;
    Object.assign(this, { account: name || null, balance: null, positions: [], fills: [] });
    this.onChange("update");
    this.refresh();
  }

  // The balance and positions again; a stored key not yet checked (the API was away) is tried.
  async refresh() {
    if (!this.open && this.key !== null && this.account === null) {
      if (this.mode !== null) await this.logIn(this.key);
      return;
    }
    if (!this.ready) return;
    const generation = this.generation;
    const [balance, positions, fills] = await Promise.all([
      this.request(this.own("account")),
      this.request(this.own("account/positions")),
      this.request(this.own(`account/trades?limit=${FILLS_READ}`)),
    ]);
    if (generation !== this.generation) return;
    if (balance.status === 401) {
      this.logOut("Your key was refused (revoked?): log in again.");
      return;
    }
    if (balance.ok) this.balance = balance.body;
    if (positions.ok) this.positions = positions.body.items;
    if (fills.ok) this.fills = fills.body.items;
    this.fillsProblem = fills.ok ? "" : `Fills: ${fills.status ? `${fills.status}: ` : ""}${fills.body?.error?.message ?? "not read"}`;
    const prices = await lastPrices(this.positions.map((p) => p.market_id));
    if (generation !== this.generation) return;
    this.lastPrices = prices;
    this.onChange("update");
  }
}

// Each market's last trade price, from its ticker (the API's live view).
async function lastPrices(marketIds) {
  const answers = await Promise.all(marketIds.map((id) => api(`markets/${encodeURIComponent(id)}/ticker`)));
  return new Map(answers.filter((a) => a.ok).map((a) => [a.body.market_id, a.body.last_price]));
}

// markets: the API's markets by id (for how each market's prices read).
export function renderSession(session, markets) {
  const keys = session.mode === "keys";
  $("#auth-badge").hidden = session.mode !== "open";
  $("#login").hidden = !keys || session.ready;
  $("#login-message").textContent = session.problem;
  $("#logout").hidden = !keys || !session.ready;
  $("#account").hidden = !session.ready;
  $("#account-hint").hidden = session.ready || keys;
  const panel = $("#account-panel");
  panel.dataset.mode = session.mode ?? "";
  panel.dataset.account = session.account ?? "";
  renderFills(session, markets);
  if (!session.ready) return;
  $("#account-name").textContent = session.account;
  for (const field of MONEY) {
    const node = document.querySelector(`#account [data-money="${field}"]`);
    const cents = session.balance?.[field];
    node.dataset.cents = cents === undefined ? "" : String(cents);
    node.querySelector("dd").textContent = dollars(cents);
  }
  const held = session.positions.filter((p) => p.yes || p.no || p.stake || p.liability);
  $("#positions tbody").replaceChildren(
    ...(held.length ? held.map((p) => positionRow(p, session)) : [emptyRow(3, "no positions")]),
  );
}

// Binary: the YES or NO contracts held, at their average price; odds: the stake of backs and the
// liability of lays, matched. Then the P&L, when the fills read so far account for the position.
function positionRow(p, session) {
  const fills = session.fills.filter((f) => f.market_id === p.market_id).reverse();
  const pnl = positionPnl(p, fills, session.lastPrices.get(p.market_id) ?? null);
  const dataset = { position: p.market_id, yes: p.yes, no: p.no, stake: p.stake, liability: p.liability };
  if (pnl) dataset.realised = Math.round(pnl.realised);
  if (pnl && pnl.marked !== null) dataset.marked = Math.round(pnl.marked);
  const waiting = pnl ? "" : "waiting for the fills that make this position";
  return el(
    "tr",
    { class: `position ${p.scheme}`, dataset },
    el(
      "td",
      { class: "holding" },
      el("span", { class: "market-name", title: p.market_id }, p.market_id),
      el("span", { class: "held" }, held(p, pnl)),
    ),
    el("td", { class: `num pnl ${sign(pnl?.realised)}`, title: waiting }, signedDollars(pnl?.realised)),
    el("td", { class: `num pnl ${sign(pnl?.marked)}`, title: waiting }, signedDollars(pnl?.marked)),
  );
}

function held(p, pnl) {
  if (p.scheme === "odds") return `back ${dollars(p.stake)} · lay ${dollars(p.liability)}`;
  const [name, count, average] = p.yes ? ["YES", p.yes, pnl?.average] : ["NO", p.no, pnl ? 100 - pnl.average : null];
  const at = average === undefined || average === null ? "" : ` @ ${Math.round(average * 10) / 10}¢`;
  return `${name} ${amount(count)}${at}`;
}

function sign(cents) {
  return !cents || Math.round(cents) === 0 ? "" : cents > 0 ? "up" : "down";
}

function renderFills(session, markets) {
  const rows = session.fills.slice(0, FILLS_SHOWN).map((f) => {
    const shown = schemeOf(markets.get(f.market_id));
    return el(
      "tr",
      {
        class: `fill ${f.side}`,
        dataset: { tradeId: f.trade_id, market: f.market_id, side: f.side, price: f.price, qty: f.qty, fee: f.fee ?? 0 },
      },
      el("td", { class: "time" }, clock(f.time_ms)),
      el("td", { class: "market-name" }, f.market_id),
      el("td", { class: "side" }, f.side),
      el("td", { class: "num price" }, shown.price(f.price)),
      el("td", { class: "num" }, amount(f.qty)),
      el("td", { class: "num fee" }, f.fee ? dollars(f.fee) : "—"), // cents, paid to the market's fee account
      el("td", {}, f.role),
    );
  });
  $("#fills tbody").replaceChildren(...(rows.length ? rows : [emptyRow(7, "your trades show up here")]));
  $("#fills").dataset.fills = String(rows.length);
  $("#fills-message").textContent = session.fillsProblem;
}

function emptyRow(span, text) {
  return el("tr", { class: "empty" }, el("td", { colspan: span }, text));
}
