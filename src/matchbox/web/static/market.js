// The chosen market's facts above the chart: its title and question, its category and outcomes,
// when it opens and closes (a local date-time and a countdown), its fees, its rules (folded), and
// on a binary market the YES and NO prices side by side, each with a button that fills the ticket.
// A field the API does not send (a market made before it had them) shows nothing.

import { noQuote } from "./contracts.js";
import { countdown, dateTime, feeSchedule, orDash } from "./format.js";
import { el } from "./http.js";

const $ = (selector) => document.querySelector(selector);

// m: the API's market (with the book's best bid and ask); onPick(side, price) fills the ticket.
export function renderMarketInfo(m, onPick) {
  $("#market-info").hidden = !m;
  if (!m) return;
  $("#market-heading").textContent = m.title || m.market_id;
  showText($("#market-question"), m.question);
  const facts = [m.category && el("span", { class: "tag" }, m.category)];
  if (m.outcomes?.length) facts.push(el("span", { class: "outcomes" }, m.outcomes.join(" / ")));
  $("#market-facts").replaceChildren(...facts.filter(Boolean));
  showText($("#market-fees"), feeSchedule(m.fees));
  const rules = $("#market-rules");
  rules.hidden = !m.rules;
  setIfChanged(rules.querySelector(".rules-text"), m.rules ?? "");
  renderClock(m);
  renderYesNo(m, onPick);
}

// When it opens (while that is ahead) and closes; the page calls this every second.
export function renderClock(m, now = Date.now()) {
  const node = $("#market-clock");
  const opens = m?.opens_at_ms ?? null;
  const closes = m?.closes_at_ms ?? null;
  const parts = [];
  if (opens !== null && opens > now) parts.push(`Opens ${dateTime(opens)} · in ${countdown(opens - now)}`);
  if (closes !== null) {
    parts.push(closes > now ? `Closes ${dateTime(closes)} · in ${countdown(closes - now)}` : `Closed ${dateTime(closes)}`);
  }
  node.hidden = !parts.length;
  node.dataset.closesAtMs = closes === null ? "" : String(closes);
  setIfChanged(node, parts.join(" — "));
}

// Built once, then updated in place: a button redrawn under the pointer would lose its click.
function renderYesNo(m, onPick) {
  const box = $("#yes-no");
  box.hidden = m.scheme !== "binary";
  if (box.hidden) return;
  if (!box.children.length) box.append(outcome("yes", "YES", "buy", onPick), outcome("no", "NO", "buy-no", onPick));
  const yes = { bid: m.best_bid ?? null, ask: m.best_ask ?? null };
  showQuote(box.querySelector('[data-outcome="yes"]'), yes);
  showQuote(box.querySelector('[data-outcome="no"]'), noQuote(yes.bid, yes.ask));
}

// One contract's bid and ask, and a button that buys it at its ask.
function outcome(key, name, side, onPick) {
  return el(
    "div",
    { class: `outcome ${key}`, dataset: { outcome: key, name } },
    el("span", { class: "outcome-name" }, name),
    el("span", { class: "outcome-quote" }, "bid ", el("b", { dataset: { quote: "bid" } }), " · ask ", el("b", { dataset: { quote: "ask" } })),
    el("button", {
      type: "button",
      class: "buy-outcome",
      title: key === "no" ? "Buying NO at p places a sell of YES at 100 - p" : "",
      onclick: (event) => onPick(side, Number(event.currentTarget.dataset.price)),
    }),
  );
}

function showQuote(node, quote) {
  const cents = (value) => orDash(value, (v) => `${v}¢`);
  setIfChanged(node.querySelector('[data-quote="bid"]'), cents(quote.bid));
  setIfChanged(node.querySelector('[data-quote="ask"]'), cents(quote.ask));
  const button = node.querySelector("button");
  button.disabled = quote.ask === null;
  button.dataset.price = quote.ask === null ? "" : String(quote.ask);
  setIfChanged(button, `Buy ${node.dataset.name}${quote.ask === null ? "" : ` ${quote.ask}¢`}`);
}

function showText(node, text) {
  node.hidden = !text;
  setIfChanged(node, text ?? "");
}

function setIfChanged(node, text) {
  if (node.textContent !== text) node.textContent = text;
}
