// The Matchbox dashboard: markets, the chosen market's facts, book, trades, candles and stats,
// and an order ticket, the account's balance, positions with their P&L, orders and fills. A plain
// client of the API: REST for snapshots and orders, the WebSocket feed for everything live.
// Nothing here is built or bundled; the page loads these modules as they are.

import { Session, renderSession } from "./account.js";
import { Book, renderBook } from "./book.js";
import { CandleChart } from "./chart.js";
import { asYesOrder, chargesOnFills, orderCost, orderFees } from "./contracts.js";
import { Feed } from "./feed.js";
import { amount, clock, dollars, orDash, percent, schemeOf } from "./format.js";
import { api, el } from "./http.js";
import { renderClock, renderMarketInfo } from "./market.js";

const INTERVALS = { "1s": 1000, "1m": 60_000, "1h": 3_600_000 };
const STATS_EVERY_MS = 3000;
const MARKETS_EVERY_MS = 5000;
const ACCOUNT_EVERY_MS = 2000;
const HEALTH_RETRY_MS = 2000;
const CLOCK_EVERY_MS = 1000;
const GTD_DEFAULT_MS = 3_600_000; // a GTD ticket's first expiry: an hour ahead
const TAPE_ROWS = 60;
const MARKETS_SHOWN = 1000; // the most a page of GET /v1/markets holds
const ORDER_ROWS = 50;
const LIVE_STATUSES = new Set(["pending", "accepted", "open", "partially_filled"]);
const CANCELLABLE = new Set(["open", "partially_filled"]);

const $ = (selector) => document.querySelector(selector);

const state = {
  markets: new Map(),
  marketId: null,
  interval: localStorage.getItem("matchbox.interval") in INTERVALS ? localStorage.getItem("matchbox.interval") : "1s",
  book: new Book(),
  tape: new Map(), // trade_id -> trade as shown
  orders: new Map(), // order_id -> the API's order
  accounts: new Set(), // open mode: the accounts whose orders channels we follow
  dirty: new Set(), // order ids to look up again
};

const chart = new CandleChart($("#chart"));
const feed = new Feed({ onMessage: receive, onStatus: showConnection, onOpen: connected, onAuth: feedAuthed });
const session = new Session(sessionChanged);

function market() {
  return state.markets.get(state.marketId) ?? null;
}

function scheme() {
  return schemeOf(market());
}

// ------------------------------------------------------------------ markets

async function loadMarkets() {
  const { ok, body } = await api(`markets?limit=${MARKETS_SHOWN}`);
  if (!ok) return;
  const markets = body.items;
  state.markets = new Map(markets.map((m) => [m.market_id, m]));
  if (!state.marketId || !state.markets.has(state.marketId)) {
    const wanted = marketInUrl();
    const first = markets.find((m) => m.scheme !== "ticks") ?? markets[0];
    const chosen = state.markets.has(wanted) ? wanted : first?.market_id;
    if (chosen) selectMarket(chosen);
  }
  renderMarkets();
  renderTitle();
  renderMarketInfo(market(), pickOutcome);
  renderTicketState();
}

function marketInUrl() {
  return new URLSearchParams(location.hash.slice(1)).get("market");
}

function renderMarkets() {
  const markets = [...state.markets.values()];
  syncList($("#markets"), markets.map((m) => m.market_id), marketItem, (item, marketId) => {
    const m = state.markets.get(marketId);
    const shown = schemeOf(m);
    const button = item.firstElementChild;
    button.className = marketId === state.marketId ? "market selected" : "market";
    Object.assign(button.dataset, { scheme: m.scheme, state: m.state });
    setText(button.querySelector(".tag"), m.collateral ? `${m.scheme} · $` : m.scheme, `tag ${m.scheme}`);
    button.querySelector(".tag").title = m.collateral ? "collateral: orders need funds" : "";
    setText(button.querySelector(".market-state"), m.state, `market-state ${m.state}`);
    setText(button.querySelector(".market-quote"), `${orDash(m.best_bid, shown.price)} / ${orDash(m.best_ask, shown.price)}`);
  });
  if (!markets.length) $("#markets").replaceChildren(el("li", { class: "muted" }, "no markets yet"));
}

function marketItem(marketId) {
  return el(
    "li",
    {},
    el(
      "button",
      { type: "button", dataset: { marketId }, onclick: () => selectMarket(marketId) },
      el("span", { class: "market-name" }, marketId),
      el("span", { class: "tag" }),
      el("span", { class: "market-state" }),
      el("span", { class: "market-quote" }),
    ),
  );
}

// One element per key, kept and updated in place: a live update never replaces the element
// under the pointer, so a click on it is not lost.
function syncList(container, keys, make, update) {
  const existing = new Map();
  for (const node of container.children) if (node.dataset.key) existing.set(node.dataset.key, node);
  keys.forEach((key, index) => {
    let node = existing.get(String(key));
    if (!node) {
      node = make(key);
      node.dataset.key = String(key);
    }
    update(node, key);
    if (container.children[index] !== node) container.insertBefore(node, container.children[index] ?? null);
  });
  while (container.children.length > keys.length) container.lastElementChild.remove();
}

function setText(node, text, className) {
  if (node.textContent !== text) node.textContent = text;
  if (className !== undefined && node.className !== className) node.className = className;
}

function renderTitle() {
  const m = market();
  $("#market-title").replaceChildren(
    ...(m
      ? [
          el("span", { class: "market-name" }, m.market_id),
          el("span", { class: `tag ${m.scheme}` }, m.scheme),
          el("span", { class: `market-state ${m.state}` }, m.state),
        ]
      : []),
  );
}

function selectMarket(marketId) {
  if (marketId === state.marketId) return;
  state.marketId = marketId;
  history.replaceState(null, "", `#market=${encodeURIComponent(marketId)}`);
  state.book.clear();
  state.tape.clear();
  chart.reset(scheme(), INTERVALS[state.interval]);
  renderAll();
  setupTicket();
  feed.start(channels());
  refreshStats();
}

function channels() {
  const list = [];
  if (state.marketId) list.push(`book:${state.marketId}`, `trades:${state.marketId}`);
  if (session.open) for (const account of state.accounts) list.push(`orders:${account}`);
  return list;
}

// ------------------------------------------------------------------ the feed

function showConnection(status) {
  const node = $("#connection");
  node.dataset.state = status;
  node.textContent = status;
}

// A fresh connection (not a resume): what it did not send is read over REST.
function connected(resumed) {
  if (!resumed) loadHistory();
  for (const id of state.orders.keys()) state.dirty.add(id);
  if (session.ready && !session.open) loadOpenOrders(); // orders events are not resumed: ask again
}

async function loadHistory() {
  const marketId = state.marketId;
  const interval = state.interval;
  const [trades, candles] = await Promise.all([
    api(`markets/${encodeURIComponent(marketId)}/trades?limit=${TAPE_ROWS}`),
    api(`markets/${encodeURIComponent(marketId)}/candles?interval=${interval}&limit=1000`),
  ]);
  if (marketId !== state.marketId) return;
  if (trades.ok) {
    for (const t of trades.body.items) {
      addToTape({ trade_id: t.trade_id, price: t.price, qty: t.qty, side: t.taker_side, ms: t.time_ms });
    }
    scheduleRender();
  }
  if (candles.ok && interval === state.interval) chart.store(candles.body.items);
}

function receive(message) {
  const [kind] = message.channel.split(":", 1);
  if (kind === "book" && message.market_id === state.marketId) {
    if (message.type === "snapshot") state.book.image(message);
    else if (message.type === "delta") state.book.delta(message);
    scheduleRender();
  } else if (kind === "trades" && message.market_id === state.marketId) {
    const trade = {
      trade_id: message.trade_id,
      price: message.price, // in the market's units (cents, odds or ticks), as REST
      qty: message.qty,
      side: message.taker_side, // buy/sell, or back/lay
      ms: message.time_ms,
    };
    addToTape(trade);
    chart.trade(trade);
    scheduleRender();
  } else if (kind === "orders") {
    orderEvent(message);
    accountSoon();
  }
}

function addToTape(trade) {
  state.tape.set(trade.trade_id, trade);
  if (state.tape.size > TAPE_ROWS * 2) {
    const keep = [...state.tape.keys()].sort((a, b) => b - a).slice(0, TAPE_ROWS);
    const kept = new Set(keep);
    for (const id of state.tape.keys()) if (!kept.has(id)) state.tape.delete(id);
  }
}

// ------------------------------------------------------------------ rendering

let frame = 0;
function scheduleRender() {
  if (!frame) frame = requestAnimationFrame(renderAll);
}

function renderAll() {
  frame = 0;
  const m = market();
  if (m && state.book.ready) {
    m.best_bid = state.book.best("bid");
    m.best_ask = state.book.best("ask");
  }
  renderMarkets();
  renderBook($("#book"), state.book, scheme());
  renderTape();
  renderOrders();
  renderTitle();
  renderMarketInfo(m, pickOutcome);
}

function renderTape() {
  const shown = scheme();
  const rows = [...state.tape.values()]
    .sort((a, b) => b.trade_id - a.trade_id)
    .slice(0, TAPE_ROWS)
    .map((t) =>
      el(
        "tr",
        { class: `trade ${t.side}`, dataset: { tradeId: t.trade_id, price: t.price, qty: t.qty } },
        el("td", { class: "time" }, clock(t.ms)),
        el("td", { class: "num price" }, shown.price(t.price)),
        el("td", { class: "num" }, amount(t.qty)),
        el("td", { class: "side" }, t.side),
      ),
    );
  const body = $("#tape tbody");
  body.replaceChildren(...(rows.length ? rows : [emptyRow(4, "no trades yet")]));
  $("#tape").dataset.trades = String(rows.length);
  $("#tape-qty").textContent = shown.qtyLabel;
  $("#tape-price").textContent = shown.priceField === "odds" ? "Odds" : "Price";
}

function emptyRow(span, text) {
  return el("tr", { class: "empty" }, el("td", { colspan: span }, text));
}

// ------------------------------------------------------------------ stats

async function refreshStats() {
  const marketId = state.marketId;
  if (!marketId) return;
  const interval = state.interval;
  const [stats, recent] = await Promise.all([
    api(`markets/${encodeURIComponent(marketId)}/stats`),
    api(`markets/${encodeURIComponent(marketId)}/candles?interval=${interval}&limit=3`),
  ]);
  if (marketId !== state.marketId) return;
  if (stats.ok) renderStats(stats.body);
  if (recent.ok && interval === state.interval) chart.store(recent.body.items);
  for (const [id, order] of state.orders) if (LIVE_STATUSES.has(order.status)) state.dirty.add(id);
}

function renderStats(stats) {
  const shown = scheme();
  const cards = [
    ["Last", orDash(stats.last_price, shown.price), "last"],
    ["VWAP 24 h", orDash(stats.vwap_24h, (v) => shown.plain(Math.round(v * 100) / 100)), "vwap"],
    ["Volume 24 h", [amount(stats.volume_24h), el("small", {}, ` ${shown.qtyUnit}`)], "volume"],
    ["Trades 24 h", amount(stats.trades_24h), "trades"],
    ["Bid / ask", `${orDash(stats.best_bid, shown.price)} / ${orDash(stats.best_ask, shown.price)}`, "quote"],
    ["Spread", orDash(stats.spread, shown.difference), "spread"],
  ];
  $("#stats").replaceChildren(
    ...cards.map(([label, value, key]) =>
      el(
        "div",
        { class: "stat", dataset: { stat: key } },
        el("span", { class: "label" }, label),
        el("span", { class: "value" }, ...[value].flat()),
      ),
    ),
  );
}

// ------------------------------------------------------------------ the order ticket

function setupTicket() {
  const shown = scheme();
  const m = market();
  const sides = $("#ticket-sides");
  const current = sides.querySelector("input:checked")?.value;
  sides.replaceChildren(
    ...shown.sides.map(([word, label], index) =>
      el(
        "label",
        { class: `side-choice ${word}` },
        el("input", {
          type: "radio",
          name: "side",
          value: word,
          id: `ticket-side-${word}`,
          checked: current === word || (!shown.sides.some(([w]) => w === current) && index === 0),
        }),
        el("span", {}, label),
      ),
    ),
  );
  const price = $("#ticket-price");
  $("#ticket-price-label").textContent = shown.priceLabel;
  // on a collateral market a stake is money, in cents like every amount of the API
  $("#ticket-qty-label").textContent = m?.collateral && shown.qtyField === "stake" ? "Stake (¢)" : shown.qtyLabel;
  if (shown.priceField === "odds") Object.assign(price, { step: "0.01", min: "1.01", max: "1000" });
  else Object.assign(price, { step: "1", min: "1", max: String(m?.max_tick ?? 99) });
  price.value = "";
  renderTicketState();
  renderTicket();
}

// What depends on the ticket's fields: the price's label (a NO side is priced in NO), the GTD
// expiry field, and what the order costs and pays, fees included.
function renderTicket() {
  const shown = scheme();
  const gtd = $("#ticket-tif").value === "GTD";
  $("#ticket-price-label").textContent = noSideChosen() ? "NO price (¢)" : shown.priceLabel;
  $("#ticket-expires-field").hidden = !gtd;
  $("#ticket-expires").required = gtd;
  if (gtd && !$("#ticket-expires").value) $("#ticket-expires").value = localInputValue(Date.now() + GTD_DEFAULT_MS);
  renderCost();
}

// Binary with fees: the most the fills could cost in fees (contracts.js orderFees: "up to" unless
// exact), and the profit left after them; odds with a commission: its rate, taken at settlement.
function renderCost() {
  const m = market();
  const order = ticketOrder();
  const cost = orderCost(m?.scheme, order.side, order.price, order.qty);
  const fees = orderFees(m?.fees, m?.scheme, order.side, order.price, order.qty);
  const node = $("#ticket-cost");
  node.dataset.cost = cost ? String(cost.cost) : "";
  node.dataset.payout = cost ? String(cost.payout) : "";
  node.dataset.fee = fees ? String(fees.fee) : "";
  if (!cost) {
    const atMarket = m && m.scheme !== "ticks" && order.price === null && order.qty > 0;
    const plus = atMarket && chargesOnFills(m.fees) ? " and its fees" : "";
    node.textContent = atMarket ? `A market order pays the book's prices${plus}: its cost shows once it trades.` : "";
    return;
  }
  // money on binary and collateral markets; a stake on an odds market without collateral is not
  const money = m.scheme === "binary" || m.collateral ? dollars : amount;
  const risk = order.side === "lay" ? "Liability" : "Cost";
  const fee = fees?.fee ?? 0;
  const upTo = fees?.upTo ? "up to " : "";
  const commission = m.fees?.commission_bps ? ` · commission ${percent(m.fees.commission_bps)} of net winnings` : "";
  node.textContent =
    `${risk} ${money(cost.cost)}${fees ? ` + fees ${upTo}${money(fee)}` : ""} · pays ${money(cost.payout)} if ${cost.when}` +
    ` (profit ${fees?.upTo ? "at least " : ""}${money(cost.payout - cost.cost - fee)})${commission}`;
}

// The order the ticket describes, in the exchange's terms: a NO side is the YES order it is.
function ticketOrder() {
  const shown = scheme();
  const word = $("#ticket-sides input:checked")?.value ?? "";
  const text = $("#ticket-price").value.trim();
  const price = text === "" ? null : shown.priceField === "odds" ? text : Number(text);
  const qty = Number($("#ticket-qty").value);
  return word.endsWith("-no") ? asYesOrder(word.slice(0, -"-no".length), price, qty) : { side: word, price, qty };
}

function noSideChosen() {
  return Boolean($("#ticket-sides input:checked")?.value.endsWith("-no"));
}

// A button of the YES/NO prices: buy that contract at its ask.
function pickOutcome(side, price) {
  const choice = $(`#ticket-side-${side}`);
  if (!choice) return;
  choice.checked = true;
  $("#ticket-price").value = String(price);
  renderTicket();
  $("#ticket-qty").focus();
}

// A datetime-local input's value (local time, to the second) for a unix ms.
function localInputValue(ms) {
  const local = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return local.toISOString().slice(0, 19);
}

function renderTicketState() {
  const m = market();
  const open = m?.state === "open";
  const signedOut = session.mode === "keys" && !session.ready;
  $("#ticket-submit").disabled = !open || signedOut || session.mode === null;
  let note = m && !open ? `This market is ${m.state}: it takes no orders.` : "";
  if (signedOut) note = "Log in with your API key to place orders.";
  $("#ticket-note").textContent = note;
  $("#ticket-account-field").hidden = !session.open;
  $("#ticket-account").disabled = !session.open;
  $("#cancel-all").disabled = !m || !session.ready;
  $("#cancel-all").textContent = m ? `Cancel all in ${m.market_id}` : "Cancel all";
}

function say(text, kind = "info") {
  const node = $("#ticket-message");
  node.textContent = text;
  node.dataset.kind = kind;
}

async function placeOrder(event) {
  event.preventDefault();
  const shown = scheme();
  const form = new FormData($("#ticket"));
  const order = ticketOrder();
  const body = { market_id: state.marketId, side: order.side, [shown.qtyField]: order.qty, tif: form.get("tif") };
  if (form.get("post_only")) body.post_only = true;
  if (body.tif === "GTD") {
    const expires = new Date(String(form.get("expires") ?? "")).getTime(); // the input's local time
    if (!Number.isFinite(expires)) return say("GTD: say when the order expires.", "error");
    body.expires_at_ms = expires;
  }
  if (session.open) {
    const account = String(form.get("account") ?? "").trim();
    if (!account) return say("Name an account.", "error");
    localStorage.setItem("matchbox.account", account);
    session.useName(account);
    await watchAccount(account);
    body.account = account;
  } else if (!session.ready) {
    return say("Log in with your API key to place orders.", "error");
  }
  if (order.price !== null) body[shown.priceField] = order.price;
  else body.type = "market";
  $("#ticket-submit").disabled = true;
  try {
    const { status, ok, body: answer, headers } = await session.request("orders", {
      method: "POST",
      body: JSON.stringify(body),
    });
    if (ok) {
      track(answer);
      const filled = answer.filled ? `, ${amount(answer.filled)} filled` : "";
      say(`Order #${answer.order_id}: ${answer.status.replace("_", " ")}${filled}`, "ok");
    } else {
      if (answer?.order_id) state.dirty.add(answer.order_id);
      say(refusal(status, answer, headers), "error");
    }
  } finally {
    renderTicketState();
    renderOrders();
    session.refresh();
  }
}

// A refused request in words a trader reads.
function refusal(status, answer, headers) {
  if (status === 401) {
    session.logOut("Your key was refused (revoked?): log in again.");
    return "401: your API key was refused: log in again.";
  }
  const error = answer?.error;
  if (error?.code === "INSUFFICIENT_FUNDS") {
    const free = session.balance ? ` (free: ${dollars(session.balance.free)})` : "";
    return `Insufficient funds: this order needs more than your free balance${free}.`;
  }
  if (error?.code === "POST_ONLY_WOULD_TAKE") return "Post only: this order would trade at once, so it was not placed.";
  if (status === 429) {
    const wait = headers?.get("Retry-After");
    return `429: too many requests; try again${wait ? ` in ${wait} s` : " in a moment"}.`;
  }
  const field = error?.field ? ` (${error.field})` : "";
  return `${status ? `${status}: ` : ""}${error?.message ?? "refused"}${field}`;
}

// Open mode: the account's order events come on the feed from now on; waits for the subscription.
async function watchAccount(account) {
  if (state.accounts.has(account)) return;
  state.accounts.add(account);
  await feed.subscribe(`orders:${account}`, account);
}

// ------------------------------------------------------------------ orders

function track(order) {
  state.orders.set(order.order_id, order);
  if (session.open) {
    state.accounts.add(order.account);
    saveOrders();
  }
  scheduleRender();
}

// With a key: the account's open orders, as the API has them (after a login or a reconnection).
async function loadOpenOrders() {
  const generation = session.generation;
  const { ok, body } = await session.request("account/orders?state=open");
  if (!ok || generation !== session.generation) return;
  for (const order of body.items) track(order);
}

// Open mode only: keys mode asks the API for the account's orders instead.
function saveOrders() {
  const recent = [...state.orders.values()].sort((a, b) => b.order_id - a.order_id).slice(0, ORDER_ROWS);
  localStorage.setItem("matchbox.orders", JSON.stringify(recent.map((o) => [o.order_id, o.account])));
}

function orderEvent(message) {
  const ids = message.order_id !== undefined ? [message.order_id] : [message.maker_order_id, message.taker_order_id];
  for (const id of ids) {
    const known = state.orders.has(id);
    const ours = !session.open || state.accounts.has(message.account); // with a key, the channel is ours alone
    if (known || (message.type === "OrderAccepted" && ours)) state.dirty.add(id);
  }
}

async function refreshDirty() {
  const ids = [...state.dirty];
  state.dirty.clear();
  await Promise.all(
    ids.map(async (id) => {
      const { status, ok, body } = await session.request(`orders/${id}`);
      const mine = state.orders.get(id);
      if (ok && (!mine || mine.account === body.account)) track(body);
      else if (status === 404 && mine && mine.status !== "pending") state.orders.delete(id);
    }),
  );
}

async function cancelOrder(order) {
  const path = session.open ? `orders/${order.order_id}?account=${encodeURIComponent(order.account)}` : `orders/${order.order_id}`;
  const { ok, status, body, headers } = await session.request(path, { method: "DELETE" });
  if (ok) {
    track(body);
    say(`Order #${order.order_id}: ${body.status}`, "ok");
  } else {
    say(refusal(status, body, headers), "error");
    state.dirty.add(order.order_id);
  }
  session.refresh();
}

// Every resting order of the account in the chosen market, in one request.
async function cancelAll() {
  const marketId = state.marketId;
  if (!marketId || !session.ready) return;
  const path = session.own(`orders?market_id=${encodeURIComponent(marketId)}`);
  $("#cancel-all").disabled = true;
  try {
    const { ok, status, body, headers } = await session.request(path, { method: "DELETE" });
    if (!ok) return say(refusal(status, body, headers), "error");
    for (const id of body.cancelled) state.dirty.add(id);
    const count = body.cancelled.length;
    say(`Cancelled ${count} order${count === 1 ? "" : "s"} in ${marketId}.`, "ok");
  } finally {
    renderTicketState();
    session.refresh();
  }
}

function renderOrders() {
  const body = $("#orders tbody");
  const ids = [...state.orders.keys()].sort((x, y) => y - x).slice(0, ORDER_ROWS);
  syncList(body, ids, orderRow, (row, id) => {
    const o = state.orders.get(id);
    const shown = schemeOf(state.markets.get(o.market_id));
    row.className = `order ${o.side ?? ""}`;
    Object.assign(row.dataset, { orderId: o.order_id, status: o.status, account: o.account });
    const [, market, account, side, price, filled, status, action] = row.children;
    setText(market, o.market_id);
    setText(account, o.account);
    setText(side, o.side ?? "—");
    setText(price, orDash(o.price, shown.price));
    setText(filled, `${amount(o.filled)} / ${amount(o.qty)}`);
    const badge = status.firstElementChild;
    setText(badge, o.status.replace("_", " "), `status ${o.status}`);
    badge.title = o.reject_reason ?? o.cancel_reason ?? "";
    action.firstElementChild.hidden = !CANCELLABLE.has(o.status);
  });
  if (!ids.length) body.replaceChildren(emptyRow(8, "orders placed here show up here"));
}

function orderRow(id) {
  return el(
    "tr",
    {},
    el("td", { class: "num" }, `#${id}`),
    el("td"),
    el("td"),
    el("td", { class: "side" }),
    el("td", { class: "num" }),
    el("td", { class: "num" }),
    el("td", {}, el("span", { class: "status" })),
    el("td", {}, el("button", { type: "button", class: "cancel", onclick: () => cancelOrder(state.orders.get(id)) }, "Cancel")),
  );
}

function restoreOrders() {
  try {
    for (const [id, account] of JSON.parse(localStorage.getItem("matchbox.orders") ?? "[]")) {
      state.orders.set(id, { order_id: id, account, market_id: "", status: "pending", remaining: 0, filled: 0 });
      state.accounts.add(account);
      state.dirty.add(id);
    }
  } catch {
    localStorage.removeItem("matchbox.orders");
  }
}

// ------------------------------------------------------------------ the account

// Once /health says how the API authenticates: open mode follows the accounts named in the
// ticket (as kept from earlier visits); with keys, a stored key is checked and used.
async function setupSession() {
  while (!(await session.detectMode())) await new Promise((resolve) => setTimeout(resolve, HEALTH_RETRY_MS));
  if (session.open) {
    restoreOrders();
    for (const account of state.accounts) feed.subscribe(`orders:${account}`, account);
    session.useName($("#ticket-account").value.trim());
  } else if (session.key !== null) {
    await session.logIn(session.key);
  }
  sessionChanged("update");
}

function sessionChanged(what) {
  renderSession(session, state.markets);
  renderTicketState();
  if (what === "login" || what === "logout") {
    state.orders.clear();
    state.dirty.clear();
    renderOrders();
  }
  if (what === "login") {
    feed.login(session.key);
    loadOpenOrders();
  } else if (what === "logout") {
    feed.logout();
    $("#login-key").value = "";
  }
}

// The feed took the key (account) or refused it (error).
function feedAuthed(account, error) {
  if (error) {
    say(`The live feed refused your key: ${error}`, "error");
    session.refresh(); // a refused key logs out
    return;
  }
  for (const id of state.orders.keys()) state.dirty.add(id); // anything that changed before the subscription
}

let accountTimer = 0;
function accountSoon() {
  if (accountTimer) return;
  accountTimer = setTimeout(() => {
    accountTimer = 0;
    session.refresh();
  }, 100);
}

async function logInFromForm(event) {
  event.preventDefault();
  const key = $("#login-key").value.trim();
  if (!key) return;
  $("#login-submit").disabled = true;
  try {
    await session.logIn(key);
  } finally {
    $("#login-submit").disabled = false;
  }
}

// ------------------------------------------------------------------ start

function setupIntervals() {
  const buttons = Object.keys(INTERVALS).map((name) =>
    el(
      "button",
      {
        type: "button",
        class: name === state.interval ? "interval selected" : "interval",
        dataset: { interval: name },
        onclick: () => {
          state.interval = name;
          localStorage.setItem("matchbox.interval", name);
          setupIntervals();
          chart.reset(scheme(), INTERVALS[name]);
          loadHistory();
        },
      },
      name,
    ),
  );
  $("#intervals").replaceChildren(...buttons);
}

function start() {
  session.takeKeyFromUrl(); // before anything rewrites the address's fragment
  $("#ticket-account").value = localStorage.getItem("matchbox.account") ?? `trader-${Math.random().toString(16).slice(2, 6)}`;
  $("#ticket").addEventListener("submit", placeOrder);
  $("#ticket").addEventListener("input", renderTicket);
  $("#ticket").addEventListener("change", renderTicket);
  $("#cancel-all").addEventListener("click", cancelAll);
  $("#login").addEventListener("submit", logInFromForm);
  $("#logout").addEventListener("click", () => session.logOut());
  $("#ticket-account").addEventListener("change", () => session.useName($("#ticket-account").value.trim()));
  // on press, not click: the ladder may be redrawn between press and release
  $("#book").addEventListener("pointerdown", (event) => {
    const level = event.target.closest(".level[data-price]");
    if (!level) return;
    // a NO side is priced in NO: a level of YES at p is NO at 100 - p
    $("#ticket-price").value = noSideChosen() ? String(100 - Number(level.dataset.price)) : level.dataset.price;
    renderTicket();
  });
  window.addEventListener("hashchange", () => {
    // a login link pasted into an open page
    if (session.takeKeyFromUrl() && session.mode === "keys") session.logIn(session.key);
    if (state.markets.has(marketInUrl())) selectMarket(marketInUrl());
  });
  setupIntervals();
  renderAll();
  renderSession(session, state.markets);
  renderTicketState();
  setupSession();
  loadMarkets();
  setInterval(loadMarkets, MARKETS_EVERY_MS);
  setInterval(refreshStats, STATS_EVERY_MS);
  setInterval(() => state.dirty.size && refreshDirty(), 150);
  setInterval(() => session.refresh(), ACCOUNT_EVERY_MS);
  setInterval(() => renderClock(market()), CLOCK_EVERY_MS);
}

// For people poking around in the console, and for the browser test.
window.matchbox = {
  state,
  chart,
  feed,
  session,
  bars: () => chart.series().length,
  select: selectMarket,
};

start();
