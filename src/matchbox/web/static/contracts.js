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

// Fees (a market's `fees`, null when it charges nothing). A binary market charges each fill, the
// maker and the taker at their own rates; an odds market a commission on net winnings at
// settlement, which no order's figures show in advance.
export function chargesOnFills(fees) {
  return Boolean(fees && (fees.maker_bps || fees.taker_bps || fees.maker_per_contract || fees.taker_per_contract));
}

// What one fill costs one side in fees, in cents, as the engine charges it
// (matchbox.engine.ledger._fee): the role's ("maker" or "taker") basis points of the side's own
// notional, rounded up to the cent once for the whole fill, plus cents per contract. A buy of YES
// at p pays on p a contract, a sell of YES (a buy of NO at 100 - p) on 100 - p. Integers, exact
// (BigInt: bps x notional passes 2**53 on a large fill).
export function fillFee(fees, role, side, price, qty) {
  if (!fees) return 0;
  const unit = side === "buy" ? price : 100 - price;
  const rate = BigInt(fees[`${role}_bps`] ?? 0) * BigInt(unit) * BigInt(qty);
  return Number((rate + 9999n) / 10000n) + (fees[`${role}_per_contract`] ?? 0) * qty;
}

// The most an order (in YES terms, at its limit) could cost in fees, before it is placed:
// {fee, upTo} in cents, or null when nothing is known or charged (no fees, not binary, a market
// order, no whole quantity, a price off the 1..99 cents ladder). A crossing order takes, so it
// pays the taker's rate on what it fills at once, and the maker's on what rests and fills later;
// every fill is at its limit or better and rounded up on its own, so the most is a fill per
// contract at the limit, at the higher of the two rates (the taker's on any usual schedule):
// q x the fee of one contract, which is what the engine reserves for fees with the order. upTo:
// it may come out lower (a rate in basis points, or maker and taker rates that differ); false
// when it is exactly that (no rate in basis points, the same cents per contract for both).
export function orderFees(fees, scheme, side, price, qty) {
  const whole = (value, below) => Number.isInteger(value) && value > 0 && value < below;
  if (scheme !== "binary" || !chargesOnFills(fees) || !whole(price, 100) || !whole(qty, Infinity)) return null;
  const perContract = Math.max(fillFee(fees, "maker", side, price, 1), fillFee(fees, "taker", side, price, 1));
  const exact = !fees.maker_bps && !fees.taker_bps && fees.maker_per_contract === fees.taker_per_contract;
  return { fee: perContract * qty, upTo: !exact };
}
