// Candles with volume (TradingView's lightweight-charts, served from static/vendor).
//
// History comes from GET /markets/{id}/candles (the analytics consumer's tables); live trades
// from the feed are folded into candles here. The two overlap and neither knows which trades
// the other has seen, but both count trades: the consumer's candle holds a prefix of a bucket's
// trades (it trails the stream), the live one a suffix (the trades since the page connected).
// Each bucket shows whichever has counted more trades, and the consumer's wins a tie, so a
// bucket is exact once the consumer caught up and, for buckets begun after the page connected,
// as soon as the trades arrive. The page refetches recent candles every few seconds.

const MAX_BUCKETS = 3000;
const UP = "#26a69a";
const DOWN = "#ef5350";

export class CandleChart {
  constructor(container) {
    this.container = container;
    this.stored = new Map(); // bucket start ms -> candle from the API
    this.live = new Map(); // bucket start ms -> {ids, open, high, low, close, volume}
    this.intervalMs = 60_000;
    this.pending = new Set();
    this.shown = []; // bucket starts given to the chart, in order
    this.frame = 0;
    const lib = window.LightweightCharts;
    if (!lib) {
      container.classList.add("missing");
      container.textContent =
        "The chart library is missing: run `make` (or `.venv/bin/python -m matchbox.web.vendor`) and reload.";
      return;
    }
    // the chart's attribution logo (on by default) is the link to TradingView its licence asks for
    this.chart = lib.createChart(container, {
      autoSize: true,
      layout: { background: { color: "transparent" }, textColor: "#9aa4b2", fontSize: 11 },
      grid: { vertLines: { color: "#1f2733" }, horzLines: { color: "#1f2733" } },
      rightPriceScale: { borderColor: "#2a3441" },
      timeScale: {
        borderColor: "#2a3441",
        timeVisible: true,
        secondsVisible: true,
        rightOffset: 4,
        barSpacing: 12,
        tickMarkFormatter: tickMark,
      },
      localization: { timeFormatter: (time) => new Date(time * 1000).toLocaleString([], { hour12: false }) },
      crosshair: { mode: lib.CrosshairMode.Normal },
    });
    this.candles = this.chart.addSeries(lib.CandlestickSeries, {
      upColor: UP, downColor: DOWN, borderVisible: false, wickUpColor: UP, wickDownColor: DOWN,
    });
    this.volume = this.chart.addSeries(lib.HistogramSeries, {
      priceFormat: { type: "volume" }, priceScaleId: "volume", lastValueVisible: false, priceLineVisible: false,
    });
    this.chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    this.candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.25 } });
  }

  // A new market or interval: everything starts again.
  reset(scheme, intervalMs) {
    this.stored.clear();
    this.live.clear();
    this.pending.clear();
    this.shown = [];
    this.intervalMs = intervalMs;
    if (!this.chart) return this.publish();
    this.candles.applyOptions({
      priceFormat: { type: "price", precision: scheme.precision, minMove: scheme.minMove },
    });
    this.chart.applyOptions({ timeScale: { secondsVisible: intervalMs < 60_000 } });
    this.candles.setData([]);
    this.volume.setData([]);
    this.publish();
  }

  // Candles from the API (in any order: it lists them newest first); a refetch of recent ones
  // replaces what it covers.
  store(candles) {
    for (const candle of candles) {
      this.stored.set(candle.start_ms, candle);
      this.pending.add(candle.start_ms);
    }
    this.schedule();
  }

  // One trade from the feed: {trade_id, price (as shown), qty, ms}.
  trade(trade) {
    const start = trade.ms - (trade.ms % this.intervalMs);
    let bucket = this.live.get(start);
    if (!bucket) {
      bucket = { ids: new Set(), open: trade.price, high: trade.price, low: trade.price, close: trade.price, volume: 0 };
      this.live.set(start, bucket);
    }
    if (bucket.ids.has(trade.trade_id)) return;
    bucket.ids.add(trade.trade_id);
    bucket.high = Math.max(bucket.high, trade.price);
    bucket.low = Math.min(bucket.low, trade.price);
    bucket.close = trade.price;
    bucket.volume += trade.qty;
    this.pending.add(start);
    this.schedule();
  }

  bar(start) {
    const stored = this.stored.get(start);
    const live = this.live.get(start);
    const useLive = live && (!stored || live.ids.size > stored.trades);
    const source = useLive ? live : stored;
    return {
      time: chartTime(start),
      open: source.open,
      high: source.high,
      low: source.low,
      close: source.close,
      volume: source.volume,
    };
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    this.frame = 0;
    const changed = [...this.pending].sort((a, b) => a - b);
    this.pending.clear();
    if (!changed.length) return;
    const pruned = this.prune();
    const last = this.shown.length ? this.shown[this.shown.length - 1] : -Infinity;
    const known = new Set(this.shown);
    if (!pruned && changed.every((start) => start >= last || known.has(start))) {
      for (const start of changed) {
        if (start > last) this.shown.push(start);
        this.draw([start], start < last);
      }
    } else {
      this.shown = [...new Set([...this.stored.keys(), ...this.live.keys()])].sort((a, b) => a - b);
      this.draw(this.shown, null);
    }
    this.publish();
  }

  // historical: update an older bar in place; null: replace the whole series.
  draw(starts, historical) {
    if (!this.chart) return;
    const bars = starts.map((start) => this.bar(start));
    const volumes = bars.map((b) => ({ time: b.time, value: b.volume, color: b.close >= b.open ? `${UP}80` : `${DOWN}80` }));
    if (historical === null) {
      this.candles.setData(bars);
      this.volume.setData(volumes);
      return;
    }
    this.candles.update(bars[0], historical);
    this.volume.update(volumes[0], historical);
  }

  prune() {
    const all = [...new Set([...this.stored.keys(), ...this.live.keys()])].sort((a, b) => a - b);
    if (all.length <= MAX_BUCKETS) return false;
    for (const start of all.slice(0, all.length - MAX_BUCKETS)) {
      this.stored.delete(start);
      this.live.delete(start);
    }
    return true;
  }

  // What the page (and its browser test) can read: how many bars, and the last one.
  publish() {
    this.container.dataset.bars = String(this.shown.length);
    const last = this.shown[this.shown.length - 1];
    if (last === undefined) {
      delete this.container.dataset.lastClose;
      delete this.container.dataset.lastVolume;
      return;
    }
    const bar = this.bar(last);
    this.container.dataset.lastClose = String(bar.close);
    this.container.dataset.lastVolume = String(bar.volume);
  }

  series() {
    return this.chart ? this.candles.data() : [];
  }
}

function chartTime(startMs) {
  return Math.floor(startMs / 1000);
}

// Times stay UTC seconds (a shifted time could repeat when the clocks go back); labels are local.
function tickMark(time, type) {
  const when = new Date(time * 1000);
  if (type === 0) return when.toLocaleDateString([], { year: "numeric" });
  if (type === 1) return when.toLocaleDateString([], { month: "short" });
  if (type === 2) return when.toLocaleDateString([], { day: "numeric", month: "short" });
  const seconds = type === 4 ? { second: "2-digit" } : {};
  return when.toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit", ...seconds });
}
