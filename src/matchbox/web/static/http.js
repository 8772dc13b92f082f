// Small helpers the dashboard's modules share: JSON over HTTP, and building elements.

// The API's version: every path the dashboard asks for is under it.
export const V1 = "/v1/";

// {status, ok, body} for a path under /v1/; a network failure is status 0 (the page keeps polling
// and reconnecting). An error's body is the API's one shape: {error: {code, message, field}}.
export async function api(path, options = {}) {
  let response;
  let text;
  try {
    response = await fetch(V1 + path, {
      ...options,
      headers: { "Content-Type": "application/json", ...(options.headers ?? {}) },
    });
    text = await response.text();
  } catch (error) {
    const message = `the API did not answer (${error.message})`;
    return { status: 0, ok: false, body: { error: { code: "UNAVAILABLE", message } }, headers: null };
  }
  let body = null;
  try {
    body = text ? parseJson(text) : null;
  } catch {
    body = { error: { code: "UNAVAILABLE", message: text } };
  }
  return { status: response.status, ok: response.ok, body, headers: response.headers };
}

// JSON with its large integers exact. Order and trade ids carry their shard in their high bits
// (shard 2 and up: above 2**53, where a number is not exact), so such an integer is read as the
// string of its digits: an id is only ever shown, compared and sent back in a URL.
export function parseJson(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && !Number.isSafeInteger(value) && /^-?\d+$/.test(context?.source ?? "")
      ? context.source
      : value,
  );
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}
