// The arithmetic of the contracts a trader sees before placing: a binary market's NO side, and
// what an order costs and pays. Pure functions of numbers, no page: the browser test calls them.
//
// The exchange trades YES contracts only (cents, 1..99). A NO contract pays 100 when YES pays
// nothing, so a YES and a NO together are always worth 100 (the ledger redeems such a pair at
// once): NO's prices are YES's mirrored about 100.

// The YES order a NO order is: buying NO at p is selling YES at 100 - p, selling NO at p is buying
// YES at 100 - p, the same number of contracts. A market order (price null) stays one.
export function asYesOrder(noSide, noPrice, qty) {
  return { side: noSide === "buy" ? "sell" : "buy", price: noPrice === null ? null : 100 - noPrice, qty };
}

// NO's bid and ask from YES's: to sell NO is to buy YES, so NO's bid is 100 - YES's ask and its
// ask 100 - YES's bid (null where YES has none).
export function noQuote(yesBid, yesAsk) {
  return { bid: yesAsk === null ? null : 100 - yesAsk, ask: yesBid === null ? null : 100 - yesBid };
}

// What an order puts at risk and what it pays, in the market's minor units (cents), before it is
// placed: {cost, payout, when} (when: the outcome that pays), or null when that is not known (a
// market order, a ticks market, no quantity). Binary, with the order in YES terms: a buy of q at p
// costs q x p and pays q x 100 if YES; a sell of q at p (= buying NO at 100 - p) costs
// q x (100 - p) and pays q x 100 if NO. Odds, decimal odds o read to the hundredth (the ladder's
// finest step): a back of stake s risks s and returns s x o if the selection wins; a lay of stake
// s risks its liability s x (o - 1) and returns s plus that if it loses. Rounded as the ledger
// does: a back's winnings down, a lay's liability (what it reserves) up.
export function orderCost(scheme, side, price, qty) {
  if (price === null || !(qty > 0)) return null;
  if (scheme === "binary") {
    const buy = side === "buy";
    return { cost: qty * (buy ? price : 100 - price), payout: qty * 100, when: buy ? "YES" : "NO" };
  }
  if (scheme !== "odds") return null;
  const over = Math.round(Number(price) * 100) - 100; // (o - 1) in hundredths
  if (side === "back") return { cost: qty, payout: qty + Math.floor((qty * over) / 100), when: "it wins" };
  const liability = Math.ceil((qty * over) / 100);
  return { cost: liability, payout: liability + qty, when: "it loses" };
}
