// Who trades in the dashboard. With API keys (the default) a key, kept in localStorage and taken
// from a #key=… link, names the account: orders, cancels and account reads send it as
// Authorization: Bearer. In open mode (GET /health says "auth": "open") there are no keys: the
// account is the name typed in the ticket, sent in the body or as ?account=.

import { amount, dollars } from "./format.js";
import { api, el } from "./http.js";

const KEY_STORAGE = "matchbox.key";
const MONEY = ["total", "reserved", "free"];

const $ = (selector) => document.querySelector(selector);

export class Session {
  // onChange(what): "login", "logout" or "update", after the session changed.
  constructor(onChange) {
    this.mode = null; // "keys" or "open", once /health answered
    this.key = localStorage.getItem(KEY_STORAGE);
    this.account = null; // keys: the key's account, once the API took the key; open: the ticket's name
    this.balance = null; // {account, total, reserved, free} in cents
    this.positions = [];
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
    Object.assign(this, { account: body.account, balance: body, positions: [], problem: "" });
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
    Object.assign(this, { key: null, account: null, balance: null, positions: [] });
    localStorage.removeItem(KEY_STORAGE);
  }

  // Open mode: the account is the ticket's.
  useName(name) {
    if (!this.open || name === this.account) return;
    this.generation += 1;
    Object.assign(this, { account: name || null, balance: null, positions: [] });
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
    const [balance, positions] = await Promise.all([
      this.request(this.own("account")),
      this.request(this.own("account/positions")),
    ]);
    if (generation !== this.generation) return;
    if (balance.status === 401) {
      this.logOut("Your key was refused (revoked?): log in again.");
      return;
    }
    if (balance.ok) this.balance = balance.body;
    if (positions.ok) this.positions = positions.body.items;
    this.onChange("update");
  }
}

export function renderSession(session) {
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
    ...(held.length ? held.map(positionRow) : [el("tr", { class: "empty" }, el("td", { colspan: 3 }, "no positions"))]),
  );
}

// Binary: YES and NO contracts held; odds: the stake of backs and the liability of lays, matched.
function positionRow(p) {
  const [first, second] =
    p.scheme === "odds"
      ? [`back ${dollars(p.stake)}`, `lay ${dollars(p.liability)}`]
      : [`YES ${amount(p.yes)}`, `NO ${amount(p.no)}`];
  const dataset = { position: p.market_id, yes: p.yes, no: p.no, stake: p.stake, liability: p.liability };
  return el(
    "tr",
    { class: `position ${p.scheme}`, dataset },
    el("td", { class: "market-name", title: p.market_id }, p.market_id),
    el("td", { class: "num" }, first),
    el("td", { class: "num" }, second),
  );
}
