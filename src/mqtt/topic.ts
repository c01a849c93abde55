/**
 * Topic Name and Topic Filter rules (§4.7) and Shared Subscription filters (§4.8.2).
 *
 * The decoder does not apply these: a PUBLISH with a wildcard in its topic or a SUBSCRIBE with a bad filter
 * is well-formed on the wire, and the broker answers it with the proper reason code (DISCONNECT 0x90,
 * SUBACK 0x8F), which it can only do if decoding succeeded.
 *
 * @module
 */

import { MAX_STRING_BYTES } from "./utf8.ts";

const SLASH = 0x2f, PLUS = 0x2b, HASH = 0x23;

/** Prefix of a Shared Subscription Topic Filter (§4.8.2). */
export const SHARE_PREFIX = "$share/";

/**
 * UTF-8 byte length of `s`, or -1 when it contains U+0000 or a lone surrogate (not a valid MQTT string,
 * §1.5.4). Local to this module so that validation never throws.
 */
function mqttStringBytes(s: string): number {
  const n = s.length;
  let bytes = n;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      if (c === 0) return -1;
    } else if (c < 0x800) {
      bytes += 1;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const d = c <= 0xdbff && i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (d < 0xdc00 || d > 0xdfff) return -1;
      bytes += 2;
      i++;
    } else {
      bytes += 2;
    }
  }
  return bytes;
}

/**
 * True for a valid Topic Name (§4.7.3, §3.3.2.1): at least one character [MQTT-4.7.3-1], no wildcard
 * characters [MQTT-3.3.2-2], no U+0000, at most 65535 bytes of UTF-8.
 */
export function isValidTopicName(topic: string): boolean {
  if (!isValidDecodedTopicName(topic)) return false;
  const bytes = mqttStringBytes(topic);
  return bytes > 0 && bytes <= MAX_STRING_BYTES;
}

/**
 * True for `$SYS` and the topics under it, which only the broker publishes. `$SYSTEM/x` or `$SYSfoo` are
 * other `$` topics: the first level must be `$SYS` itself.
 */
export function isSysTopic(topic: string): boolean {
  return topic.charCodeAt(0) === 36 && topic.startsWith("$SYS") &&
    (topic.length === 4 || topic.charCodeAt(4) === 47);
}

/**
 * {@link isValidTopicName} for a topic that our decoder produced: it already refused ill-formed UTF-8 and
 * U+0000 (MQTT-1.5.4-1, MQTT-1.5.4-2), and a two-byte length prefix cannot announce more than 65535 bytes,
 * so what is left to check is a non-empty name without wildcard characters.
 */
export function isValidDecodedTopicName(topic: string): boolean {
  if (topic.length === 0) return false;
  for (let i = 0; i < topic.length; i++) {
    const c = topic.charCodeAt(i);
    if (c === PLUS || c === HASH) return false;
  }
  return true;
}

/** Wildcard placement for a filter without the $share prefix (§4.7.1). */
function validWildcards(filter: string): boolean {
  const n = filter.length;
  if (n === 0) return false;
  for (let i = 0; i < n; i++) {
    const c = filter.charCodeAt(i);
    if (c === HASH) {
      // '#' is the last character and a whole level [MQTT-4.7.1-1].
      if (i !== n - 1 || (i > 0 && filter.charCodeAt(i - 1) !== SLASH)) return false;
    } else if (c === PLUS) {
      // '+' occupies an entire level [MQTT-4.7.1-2].
      if (i > 0 && filter.charCodeAt(i - 1) !== SLASH) return false;
      if (i < n - 1 && filter.charCodeAt(i + 1) !== SLASH) return false;
    }
  }
  return true;
}

/**
 * True for a valid Topic Filter: non-empty [MQTT-4.7.3-1], `#` only as the whole last level, `+` only as a
 * whole level (§4.7.1), no U+0000, at most 65535 bytes. A filter starting with `$share/` must be
 * `$share/{ShareName}/{filter}` with a non-empty ShareName free of `/`, `+`, `#` and a valid filter after
 * it (§4.8.2, MQTT-4.8.2-1, MQTT-4.8.2-2).
 */
export function isValidTopicFilter(filter: string): boolean {
  const bytes = mqttStringBytes(filter);
  if (bytes <= 0 || bytes > MAX_STRING_BYTES) return false;
  if (filter.startsWith(SHARE_PREFIX)) {
    const shared = parseSharedFilter(filter);
    return shared !== null && validWildcards(shared.filter);
  }
  return validWildcards(filter);
}

/**
 * Splits a Shared Subscription filter `$share/{group}/{filter}` (§4.8.2). Returns null when `filter` is not
 * a shared subscription or its ShareName is empty or contains `+` or `#` (the `/` ends the ShareName), or
 * nothing follows it. The returned inner filter is not checked for wildcard placement: use
 * {@link isValidTopicFilter} on the whole filter for that.
 */
export function parseSharedFilter(filter: string): { group: string; filter: string } | null {
  if (!filter.startsWith(SHARE_PREFIX)) return null;
  const start = SHARE_PREFIX.length;
  const slash = filter.indexOf("/", start);
  if (slash <= start || slash === filter.length - 1) return null;
  const group = filter.slice(start, slash);
  if (group.includes("+") || group.includes("#")) return null;
  return { group, filter: filter.slice(slash + 1) };
}
