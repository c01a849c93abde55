/**
 * Topic matching for the ACL: does a rule's filter match a topic name (§4.7), and does it cover a whole
 * subscription filter. Kept inside `src/auth` so the ACL does not depend on the broker's topic tree.
 *
 * Topics and filters are handled as arrays of levels (`"a/b".split("/")`), split once per check.
 *
 * @module
 */

/** True when the level is `+` or `#`. */
function isWildcard(level: string): boolean {
  return level === "+" || level === "#";
}

/**
 * Describes what is wrong with a topic filter, or returns undefined when it is valid: not empty (§4.7.3),
 * `#` only as the whole last level (MQTT-4.7.1-2), `+` only as a whole level (MQTT-4.7.1-3).
 */
export function filterProblem(filter: string): string | undefined {
  if (filter.length === 0) return "a topic filter must not be empty";
  const levels = filter.split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (level.includes("#") && (level !== "#" || i !== levels.length - 1)) {
      return `'#' must be a whole level and the last one, in '${filter}'`;
    }
    if (level.includes("+") && level !== "+") return `'+' must be a whole level, in '${filter}'`;
  }
  return undefined;
}

/**
 * True when `filter` matches `topic` (both as levels). `+` matches exactly one level, `#` the parent
 * level and any number of children (§4.7.1.2); a filter starting with a wildcard does not match a topic
 * starting with `$` (MQTT-4.7.2-1).
 */
export function levelsMatch(filter: readonly string[], topic: readonly string[]): boolean {
  if (isWildcard(filter[0]) && topic[0].startsWith("$")) return false;
  for (let i = 0; i < filter.length; i++) {
    const f = filter[i];
    if (f === "#") return true;
    if (i >= topic.length) return false;
    if (f !== "+" && f !== topic[i]) return false;
  }
  return filter.length === topic.length;
}

/**
 * True when every topic the subscription `filter` can match is also matched by `rule` (both as levels):
 * the filter is equal to or narrower than the rule. `a/#` covers `a/b/+` and `a/#`; `a/+` does not cover
 * `a/#`. When unsure the answer is false, which denies rather than widens.
 */
export function levelsCover(rule: readonly string[], filter: readonly string[]): boolean {
  // A rule starting with a wildcard matches no `$` topic (MQTT-4.7.2-1), so it cannot cover `$SYS/...`.
  if (isWildcard(rule[0]) && filter[0].startsWith("$")) return false;
  // `+/#` and `#` match the same topics (every topic has at least one level; neither matches `$`).
  if (filter.length === 1 && filter[0] === "#" && rule.length === 2 && rule[0] === "+" && rule[1] === "#") {
    return true;
  }
  for (let i = 0; i < rule.length; i++) {
    const r = rule[i];
    if (r === "#") return true;
    if (i >= filter.length) return false;
    const f = filter[i];
    // The filter reaches any depth here (and its parent level); only a `#` in the rule follows it.
    if (f === "#") return false;
    if (r === "+") continue;
    if (f !== r) return false;
  }
  return rule.length === filter.length;
}

/** String form of {@link levelsMatch}: true when `filter` matches the topic name `topic`. */
export function topicMatches(filter: string, topic: string): boolean {
  return levelsMatch(filter.split("/"), topic.split("/"));
}

/** String form of {@link levelsCover}: true when `rule` matches every topic `filter` can match. */
export function filterCovers(rule: string, filter: string): boolean {
  return levelsCover(rule.split("/"), filter.split("/"));
}
