// The order book ladder: an image from the feed, then level deltas (each level's new total;
// 0 removes it). Deltas as old as the image are already in it and are skipped.

const LEVELS_SHOWN = 12;

export class Book {
  constructor() {
    this.clear();
  }

  clear() {
    this.bids = new Map(); // price -> {qty, orders}
    this.asks = new Map();
    this.sequence = -1;
    this.ready = false;
  }

  image(message) {
    this.clear();
    for (const level of message.bids) this.bids.set(level.price, level);
    for (const level of message.asks) this.asks.set(level.price, level);
    this.sequence = message.sequence;
    this.ready = true;
  }

  delta(message) {
    if (!this.ready || message.sequence <= this.sequence) return false;
    const side = message.side === "bid" ? this.bids : this.asks;
    if (message.qty > 0) side.set(message.price, { price: message.price, qty: message.qty, orders: message.orders });
    else side.delete(message.price);
    return true;
  }

  // best first: bids highest first, asks lowest first
  levels(which, count = LEVELS_SHOWN) {
    const side = which === "bid" ? this.bids : this.asks;
    const sorted = [...side.values()].sort((a, b) => (which === "bid" ? b.price - a.price : a.price - b.price));
    return sorted.slice(0, count);
  }

  best(which) {
    return this.levels(which, 1)[0]?.price ?? null;
  }
}

function levelRow(level, which, scheme, widest) {
  const row = document.createElement("div");
  row.className = `level ${which}`;
  row.dataset.side = which;
  row.dataset.price = String(level.price);
  row.dataset.qty = String(level.qty);
  row.title = "Click to use this price in the order ticket";
  const depth = document.createElement("span");
  depth.className = "depth";
  depth.style.width = `${Math.max(2, (100 * level.qty) / widest)}%`;
  const price = document.createElement("span");
  price.className = "price";
  price.textContent = scheme.price(level.price);
  const qty = document.createElement("span");
  qty.className = "qty";
  qty.textContent = level.qty.toLocaleString();
  const orders = document.createElement("span");
  orders.className = "count";
  orders.textContent = level.orders ?? "";
  row.append(depth, price, qty, orders);
  return row;
}

// Asks above (best at the bottom), the spread, bids below (best at the top).
export function renderBook(container, book, scheme) {
  const asks = book.levels("ask");
  const bids = book.levels("bid");
  const widest = Math.max(1, ...asks.map((l) => l.qty), ...bids.map((l) => l.qty));
  const fragment = document.createDocumentFragment();
  const head = document.createElement("div");
  head.className = "level head";
  head.innerHTML = `<span class="price">${scheme.priceField === "odds" ? "Odds" : "Price"}</span>` +
    `<span class="qty">${scheme.qtyLabel}</span><span class="count">Orders</span>`;
  fragment.append(head, sideTitle(scheme.askTitle, "ask"));
  for (const level of [...asks].reverse()) fragment.append(levelRow(level, "ask", scheme, widest));
  if (!asks.length) fragment.append(empty("no asks"));
  const spread = document.createElement("div");
  spread.className = "spread";
  const bid = book.best("bid");
  const ask = book.best("ask");
  spread.textContent = bid !== null && ask !== null
    ? `spread ${scheme.difference(Math.round((ask - bid) * 100) / 100)}`
    : "spread —";
  fragment.append(spread);
  for (const level of bids) fragment.append(levelRow(level, "bid", scheme, widest));
  if (!bids.length) fragment.append(empty("no bids"));
  fragment.append(sideTitle(scheme.bidTitle, "bid"));
  container.replaceChildren(fragment);
  container.dataset.sequence = String(book.sequence);
  container.dataset.bids = String(book.bids.size);
  container.dataset.asks = String(book.asks.size);
}

function sideTitle(text, which) {
  const title = document.createElement("div");
  title.className = `side-title ${which}`;
  title.textContent = text;
  return title;
}

function empty(text) {
  const row = document.createElement("div");
  row.className = "level empty";
  row.textContent = text;
  return row;
}
