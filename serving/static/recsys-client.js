// recsys-client.js: a small client for the recsys recommendation API (browsers and Node 18+, no dependencies).
// It retries what is safe to retry (a failed connection, 429, 502-504: the API accepts nothing it answers 503).
const RETRY = new Set([429, 502, 503, 504]);

export class RecsysError extends Error {
  constructor(status, detail) {
    super(`${status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    this.status = status;
    this.detail = detail;
  }
}

export class RecsysClient {
  // baseUrl: "" for the page's own origin; apiKey: the X-API-Key; onCall(method, path, status) sees every call.
  constructor(baseUrl = "", { apiKey = null, userSignature = null, attempts = 3, onCall = null } = {}) {
    this.baseUrl = baseUrl || globalThis.location?.origin || "";
    this.apiKey = apiKey;
    this.userSignature = userSignature;
    this.attempts = attempts;
    this.onCall = onCall;
  }

  async request(method, path, query = {}, body = undefined) {
    const url = new URL(path, this.baseUrl);
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
    const headers = { "Content-Type": "application/json" };
    if (this.apiKey) headers["X-API-Key"] = this.apiKey;
    if (this.userSignature) headers["X-User-Signature"] = this.userSignature;
    for (let attempt = 1; ; attempt++) {
      let response;
      try {
        response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      } catch (err) {  // the connection failed: nothing reached the API
        if (attempt >= this.attempts) throw err;
        await sleep(100 * 2 ** attempt);
        continue;
      }
      this.onCall?.(method, url.pathname + url.search, response.status);
      if (response.ok) return response.json();
      if (!RETRY.has(response.status) || attempt >= this.attempts) {
        const text = await response.text();
        let detail = text;
        try { detail = JSON.parse(text).detail; } catch { /* not JSON */ }
        throw new RecsysError(response.status, detail);
      }
      await sleep(100 * 2 ** attempt);
    }
  }

  // One placement's list: home, product (itemId), cart (cart: [ids]), buy_again, recently_viewed, ...
  placement(name, { userId, itemId, cart, n, exclude, category, maxPerCategory, details, cursor, paginate } = {}) {
    return this.request("GET", `/v1/placements/${encodeURIComponent(name)}`, {
      user_id: userId, item_id: itemId, cart: cart?.join(","), n, exclude: exclude?.join(","), category,
      max_per_category: maxPerCategory, details, cursor, paginate: paginate || undefined,
    });
  }

  recommendations(userId, { n, exclude, category, details } = {}) {
    return this.request("GET", `/v1/users/${encodeURIComponent(userId)}/recommendations`,
      { n, exclude: exclude?.join(","), category, details });
  }

  similar(itemId, { n, details } = {}) {
    return this.request("GET", `/v1/items/${encodeURIComponent(itemId)}/similar`, { n, details });
  }

  popular({ n, category, details } = {}) {
    return this.request("GET", "/v1/popular", { n, category, details });
  }

  sendEvents(events) {
    return this.request("POST", "/v1/events", {}, events);
  }

  // X-User-Signature for a signed-in user: for the shop's backend (Node 18+), never a page (it needs the
  // signing secret). "t=<unix seconds>,v1=<HMAC-SHA256 hex of user-v1:<t>:<userId>>", as privacy.sign_user.
  static async signUser(userId, secret, at = Date.now() / 1000) {
    const t = Math.floor(at);
    const enc = new TextEncoder();
    const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(`user-v1:${t}:${userId}`)));
    return `t=${t},v1=${Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
