// Words and numbers per tick scheme, as the API uses them (see src/matchbox/api/prices.py):
// binary markets trade YES contracts in cents, buy/sell; odds markets trade stakes at decimal
// odds, back/lay; ticks markets trade units at integer ticks, buy/sell. And amounts, times and fees.

import { chargesOnFills } from "./contracts.js";

const BINARY = {
  name: "binary",
  // the exchange trades YES; a NO side is placed as the YES order it is (contracts.js)
  sides: [["buy", "Buy YES"], ["sell", "Sell YES"], ["buy-no", "Buy NO"], ["sell-no", "Sell NO"]],
  priceField: "price",
  priceLabel: "Price (¢)",
  qtyField: "qty",
  qtyLabel: "Contracts",
  qtyUnit: "contracts",
  bidTitle: "Bids · buy",
  askTitle: "Asks · sell",
  precision: 0,
  minMove: 1,
  price: (value) => `${value}¢`,
  plain: (value) => String(value),
  difference: (value) => `${value}¢`,
};

const ODDS = {
  name: "odds",
  sides: [["back", "Back"], ["lay", "Lay"]],
  priceField: "odds",
  priceLabel: "Odds (decimal)",
  qtyField: "stake",
  qtyLabel: "Stake",
  qtyUnit: "stake",
  // a lay rests on the bid side, a back on the ask side (the engine's words are buy/sell)
  bidTitle: "Lays waiting",
  askTitle: "Backs waiting",
  precision: 2,
  minMove: 0.01,
  price: (value) => Number(value).toFixed(2),
  plain: (value) => Number(value).toFixed(2),
  difference: (value) => Number(value).toFixed(2),
};

const TICKS = {
  ...BINARY,
  name: "ticks",
  sides: [["buy", "Buy"], ["sell", "Sell"]],
  priceLabel: "Price (ticks)",
  qtyLabel: "Quantity",
  qtyUnit: "units",
  bidTitle: "Bids",
  askTitle: "Asks",
  price: (value) => String(value),
  difference: (value) => String(value),
};

const SCHEMES = { binary: BINARY, odds: ODDS, ticks: TICKS };

export function schemeOf(market) {
  return SCHEMES[market?.scheme] ?? TICKS;
}

export function clock(ms) {
  const when = new Date(ms);
  return when.toLocaleTimeString([], { hour12: false });
}

export function amount(value) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString();
}

export function orDash(value, format) {
  return value === null || value === undefined ? "—" : format(value);
}

// Integer cents as dollars, exactly (no float arithmetic on the amount): 123456 -> "$1,234.56".
export function dollars(cents) {
  if (cents === null || cents === undefined) return "—";
  const whole = Math.trunc(Number(cents));
  const sign = whole < 0 ? "-" : "";
  const abs = Math.abs(whole);
  return `${sign}$${Math.floor(abs / 100).toLocaleString("en-US")}.${String(abs % 100).padStart(2, "0")}`;
}

// Signed cents as dollars, rounded to the cent: 18 -> "+$0.18", -32.4 -> "-$0.32".
export function signedDollars(cents) {
  if (cents === null || cents === undefined) return "—";
  const rounded = Math.round(cents);
  return rounded > 0 ? `+${dollars(rounded)}` : dollars(rounded);
}

// A unix ms as the reader's local date and time.
export function dateTime(ms) {
  return new Date(ms).toLocaleString([], { dateStyle: "medium", timeStyle: "short", hour12: false });
}

// How long until a time, coarsely: "3d 04h", "2h 05m", "4m 09s", "9s" ("now" once it passed).
export function countdown(ms) {
  const seconds = Math.floor(ms / 1000);
  if (seconds <= 0) return "now";
  const [d, h, m, s] = [Math.floor(seconds / 86400), Math.floor(seconds / 3600) % 24, Math.floor(seconds / 60) % 60, seconds % 60];
  const two = (n) => String(n).padStart(2, "0");
  if (d) return `${d}d ${two(h)}h`;
  if (h) return `${h}h ${two(m)}m`;
  if (m) return `${m}m ${two(s)}s`;
  return `${s}s`;
}

// Basis points as a percentage: 50 -> "0.5 %", 100 -> "1 %", 125 -> "1.25 %".
export function percent(bps) {
  return `${bps / 100} %`;
}

// A market's fees in words, "" when it charges none: a binary market's on each fill ("Fees: maker
// 0.5 %, taker 1 % + 1¢/contract"), an odds market's commission ("Commission 5 % on net winnings").
export function feeSchedule(fees) {
  if (!fees) return "";
  const role = (name) => {
    const [bps, cents] = [fees[`${name}_bps`], fees[`${name}_per_contract`]];
    const parts = [bps ? percent(bps) : "", cents ? `${cents}¢/contract` : ""].filter(Boolean);
    return `${name} ${parts.length ? parts.join(" + ") : "free"}`;
  };
  const words = [];
  if (chargesOnFills(fees)) words.push(`Fees: ${role("maker")}, ${role("taker")}`);
  if (fees.commission_bps) words.push(`Commission ${percent(fees.commission_bps)} on net winnings`);
  return words.join(" · ");
}
