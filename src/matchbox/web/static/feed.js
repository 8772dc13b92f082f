// The WebSocket feed (/v1/ws): channels subscribed in the URL at connect, reconnection with
// backoff, and resume: after a drop it reconnects with ?last_id=<the last event id seen>, and the
// server sends what was missed on those channels, then live, with no gap and no duplicate. Book
// channels start with a fresh snapshot on every connection instead. Each subscription's messages
// are numbered (seq, from the acknowledgement's 0): a gap subscribes again, for a fresh start.
//
// With an API key, every connection first sends {"type":"auth","key":…} and, once the server says
// "authed", subscribes to the key's own orders channel (the key names the account). In open
// mode orders channels name their account, like the market channels.

import { parseJson } from "./http.js";

const BACKOFF_MS = [250, 500, 1000, 2000, 4000];
const ACK_TIMEOUT_MS = 2000;

export class Feed {
  constructor({ onMessage, onStatus, onOpen, onAuth }) {
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.onOpen = onOpen;
    this.onAuth = onAuth; // (account, error): the key taken (account) or refused (error)
    this.key = null;
    this.authPending = false;
    this.channels = [];
    this.socket = null;
    this.lastId = null;
    this.attempt = 0;
    this.timer = null;
    this.acks = new Map(); // channel -> [resolve]
    this.seqs = new Map(); // channel -> the seq of its last message
    this.generation = 0; // bumped by each open(): late events of an old socket are ignored
  }

  // A new set of channels: a new connection, no resume (nothing was missed on them).
  start(channels) {
    this.channels = [...channels];
    this.lastId = null;
    this.attempt = 0;
    this.open(false);
  }

  // One more channel on the live connection (kept for the next reconnections); resolves once
  // the server acknowledged it, or after a short while if the socket is down.
  subscribe(channel, target) {
    if (!this.channels.includes(channel)) this.channels.push(channel);
    const [kind] = channel.split(":", 1);
    const key = kind === "orders" ? "account" : "market_id";
    return new Promise((resolve) => {
      if (this.socket?.readyState !== WebSocket.OPEN) {
        resolve(false);
        return;
      }
      const waiting = this.acks.get(channel) ?? [];
      waiting.push(resolve);
      this.acks.set(channel, waiting);
      setTimeout(() => resolve(false), ACK_TIMEOUT_MS);
      this.socket.send(JSON.stringify({ type: "subscribe", channel: kind, [key]: target }));
    });
  }

  // From now on (and on every reconnection) authenticate with this key and follow its orders.
  login(key) {
    this.key = key;
    if (this.socket?.readyState === WebSocket.OPEN) this.authenticate();
  }

  // No key any more: a new connection, since the server keeps the old one's for its lifetime.
  logout() {
    if (this.key === null) return;
    this.key = null;
    this.start(this.channels.filter((c) => !c.startsWith("orders:")));
  }

  authenticate() {
    this.authPending = true;
    this.socket.send(JSON.stringify({ type: "auth", key: this.key }));
  }

  open(resume) {
    clearTimeout(this.timer);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close();
    }
    const generation = ++this.generation;
    this.seqs.clear();
    const url = new URL("v1/ws", document.baseURI);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    // a comma cannot be named in the URL's list: such a channel is subscribed by message instead
    const inUrl = this.channels.filter((c) => !c.includes(","));
    if (inUrl.length) url.searchParams.set("subscribe", inUrl.join(","));
    if (resume && this.lastId) url.searchParams.set("last_id", this.lastId);
    this.onStatus(resume ? "reconnecting" : "connecting");
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      if (generation !== this.generation) return;
      this.attempt = 0;
      this.onStatus("live");
      this.authPending = false;
      if (this.key) this.authenticate();
      // by message: channels the URL could not name, and those added while this socket connected
      for (const channel of this.channels.filter((c) => !inUrl.includes(c))) {
        this.subscribe(channel, channel.slice(channel.indexOf(":") + 1));
      }
      this.onOpen?.(resume && this.lastId !== null);
    };
    socket.onmessage = (event) => {
      if (generation !== this.generation) return;
      this.receive(parseJson(event.data));
    };
    socket.onclose = () => {
      if (generation !== this.generation) return;
      this.onStatus("reconnecting");
      const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
      this.attempt += 1;
      this.timer = setTimeout(() => this.open(true), delay);
    };
  }

  receive(message) {
    if (message.type === "subscribed") {
      this.seqs.set(message.channel, message.seq);
      for (const resolve of this.acks.get(message.channel) ?? []) resolve(true);
      this.acks.delete(message.channel);
      return;
    }
    if (message.type === "authed") {
      this.authPending = false;
      this.socket.send(JSON.stringify({ type: "subscribe", channel: "orders" }));
      this.onAuth?.(message.account, null);
      return;
    }
    if (message.type === "error" && message.error.field === "last_id") {
      this.onOpen?.(false); // the server could not resume from our cursor: read the rest over REST
      return;
    }
    if (message.type === "error" && this.authPending) {
      this.authPending = false;
      this.onAuth?.(null, message.error.message);
      return;
    }
    if (message.channel === null || message.type === "error") return; // pong, unsubscribed, other errors
    const last = this.seqs.get(message.channel);
    if (last !== undefined && message.seq !== last + 1) {
      // a gap on this subscription: subscribe again, for a fresh start (a book's new snapshot)
      this.seqs.delete(message.channel);
      this.subscribe(message.channel, message.channel.slice(message.channel.indexOf(":") + 1));
      return;
    }
    this.seqs.set(message.channel, message.seq);
    // The cursor to resume from: the id of the last message, an opaque string (a position in
    // each shard's stream) that the server writes for this connection, in order. A book image is
    // the book as of the cursor it names. On a fresh connection that is exactly where the live
    // feed begins, so it is the first cursor; on a resume the image comes ahead of the missed
    // history and must not move it.
    if (message.type === "snapshot") {
      if (this.lastId === null && message.id) this.lastId = message.id;
    } else if (message.id) {
      this.lastId = message.id;
    }
    this.onMessage(message);
  }
}
