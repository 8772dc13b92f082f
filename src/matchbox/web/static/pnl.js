// Profit and loss of one position, from the account's own fills and the market's last price.
//
// What it assumes:
// - `fills` are all of the account's fills in the market, oldest first (GET /account/trades,
//   reversed). Checked as far as it can be: they must add up to the position GET
//   /account/positions reports, or the answer is null (a fill not yet in the database, or older
//   than the page read) rather than a P&L from part of the history. Fills cut off while the
//   position was flat still add up: realised then counts from there (the page reads 1,000).
// - Binary: prices are cents of a YES contract, sides buy/sell of YES. Selling YES with none held
//   opens NO, and the ledger redeems a YES with a NO at once, so the position is one signed number
//   of YES contracts (NO held counts negative). Average cost, not FIFO: a fill that adds to the
//   position moves the average price; one that reduces it realises (price - average) a contract
//   closed (reversed for NO) and leaves the average. Marked: position x (last - average).
// - Odds: positions are not netted (backs and lays stay open until settlement), so nothing is
//   realised before it; marked is what laying off at the last odds l would lock in whatever the
//   result: a back of s at o makes s x o / l - s, a lay s - s x o / l.
// - Fees: realised is net of every fee the fills read paid (`fee`, cents; absent or null: none),
//   the fills that opened the position as well as those that closed it: a fee is spent whatever
//   becomes of the position. The average price is the fills' prices alone, and marked leaves out
//   what closing would cost in fees (unknown until it trades). An odds market's commission is
//   taken at settlement, from net winnings, so it is in neither.
// - No settlement (a settled market has no position). Amounts in cents, unrounded; marked is null
//   without a last price.
// {realised, marked} in cents (binary: also held, in signed YES contracts, and average, in cents a
// YES contract), or null if the fills do not account for the position.
export function positionPnl(position, fills, last) {
  const pnl = position.scheme === "odds" ? oddsPnl(fills, last) : binaryPnl(fills, last);
  const accounted =
    position.scheme === "odds"
      ? pnl.stake === position.stake && pnl.liability === position.liability
      : pnl.held === position.yes - position.no;
  if (!accounted) return null;
  const fees = fills.reduce((sum, fill) => sum + (fill.fee ?? 0), 0);
  return { ...pnl, realised: pnl.realised - fees };
}

function binaryPnl(fills, last) {
  let held = 0; // YES contracts, negative: NO
  let average = 0; // cents a YES contract, of what is held
  let realised = 0;
  for (const { side, price, qty } of fills) {
    const direction = side === "buy" ? 1 : -1;
    const closed = held * direction < 0 ? Math.min(qty, Math.abs(held)) : 0;
    realised += closed * (price - average) * -direction;
    held += direction * closed;
    const opened = qty - closed;
    if (opened > 0) {
      average = (average * Math.abs(held) + price * opened) / (Math.abs(held) + opened);
      held += direction * opened;
    }
  }
  const marked = last === null ? null : held * (last - average);
  return { held, average, realised, marked };
}

function oddsPnl(fills, last) {
  let stake = 0; // of backs, cents
  let liability = 0; // of lays, cents, each fill's rounded down as the ledger does
  let marked = last === null ? null : 0;
  for (const { side, price, qty } of fills) {
    const back = side === "back";
    if (back) stake += qty;
    else liability += Math.floor((qty * (Math.round(price * 100) - 100)) / 100);
    if (marked !== null) marked += (back ? 1 : -1) * ((qty * price) / last - qty);
  }
  return { stake, liability, realised: 0, marked };
}
