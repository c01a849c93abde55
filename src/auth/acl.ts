/**
 * Access control lists: which client may publish to, receive from and subscribe to which topics.
 *
 * ACL file format (mosquitto-like), one statement per line:
 *
 * ```
 * # Comment lines start with '#'; blank lines are ignored.
 * # Rules before the first `user` line, or after an `anonymous` line, apply to anonymous clients
 * # (clients that sent no username).
 * topic read $SYS/#
 *
 * # Rules after `user NAME` apply to the client authenticated as NAME (the rest of the line, trimmed).
 * user alice
 * topic readwrite home/alice/#
 * topic deny home/alice/secret
 *
 * # `pattern` rules apply to every client, anonymous included, wherever they appear in the file.
 * # %u is replaced by the username and %c by the client id.
 * pattern read devices/%c/config
 * pattern write devices/%u/+/telemetry
 *
 * anonymous
 * topic read public/#
 * ```
 *
 * `topic ACCESS FILTER` and `pattern ACCESS FILTER`: ACCESS is one of `read`, `write`, `readwrite` or
 * `deny`; FILTER is an MQTT topic filter (`+` one level, `#` the rest) and may contain spaces. When the
 * filter is a single word, ACCESS may be left out and means `readwrite`. After the first character of
 * FILTER, a `#` preceded by white space starts a trailing comment (a valid filter never has one there,
 * so `topic read # # all` grants `#`); `user` lines take the rest of the line verbatim, so a username
 * may contain spaces and `#`.
 *
 * Decisions: an action is allowed when at least one rule grants it and no `deny` rule matches (deny
 * wins). A client that no rule grants is denied. A filter starting with a wildcard does not match topics
 * starting with `$` (MQTT-4.7.2-1), so `$SYS/#` must be granted explicitly.
 *
 * `%u` / `%c` never widen a match: a pattern using `%u` does not apply to anonymous clients, and a
 * username or client id that is empty or contains `/`, `+` or `#` never matches a pattern using it (nor
 * one starting with `$` substituted at the start of a pattern).
 *
 * @module
 */

import { filterProblem, levelsCover, levelsMatch } from "./topic_match.ts";

/** What a rule allows; `deny` forbids everything it matches. */
export type AclAccess = "read" | "write" | "readwrite" | "deny";

const ACCESS_WORDS: readonly string[] = ["read", "write", "readwrite", "deny"];

/** One `topic` rule: a filter split into levels. */
interface TopicRule {
  readonly access: AclAccess;
  readonly levels: readonly string[];
}

/** One `pattern` rule: levels that may contain %u / %c. */
interface PatternRule {
  readonly access: AclAccess;
  readonly levels: readonly string[];
  /** Per level: true when it contains %u or %c and must be substituted. */
  readonly substituted: readonly boolean[];
  readonly usesUsername: boolean;
  readonly usesClientId: boolean;
  /** True when the first level is a literal starting with `$` before substitution. */
  readonly dollarFirst: boolean;
}

/** Which check is being made: the rule accesses that grant it. */
type Want = "read" | "write";

function grants(access: AclAccess, want: Want): boolean {
  return access === "readwrite" || access === want;
}

/** A username / client id that could change the shape of a pattern is never substituted. */
function substitutable(value: string): boolean {
  return value.length > 0 && !value.includes("/") && !value.includes("+") && !value.includes("#");
}

/** The rule's levels with %u / %c replaced, or undefined when the rule does not apply to this client. */
function expand(rule: PatternRule, username: string | undefined, clientId: string): string[] | undefined {
  if (rule.usesUsername && (username === undefined || !substitutable(username))) return undefined;
  if (rule.usesClientId && !substitutable(clientId)) return undefined;
  const out = rule.levels.slice();
  for (let i = 0; i < out.length; i++) {
    if (!rule.substituted[i]) continue;
    out[i] = out[i].replaceAll("%u", username ?? "").replaceAll("%c", clientId);
  }
  // A value starting with `$` at the start of the pattern would reach `$SYS`-like topics the pattern's
  // author never wrote.
  if (!rule.dollarFirst && out[0].startsWith("$")) return undefined;
  return out;
}

/** Decides publish / read / subscribe permissions from an ACL file. */
export class Acl {
  readonly #allowAll: boolean;
  readonly #anonymous: TopicRule[];
  readonly #users: Map<string, TopicRule[]>;
  readonly #patterns: PatternRule[];

  private constructor(
    allowAll: boolean,
    anonymous: TopicRule[],
    users: Map<string, TopicRule[]>,
    patterns: PatternRule[],
  ) {
    this.#allowAll = allowAll;
    this.#anonymous = anonymous;
    this.#users = users;
    this.#patterns = patterns;
  }

  /** An ACL that allows everything: used when no ACL file is configured. */
  static allowAll(): Acl {
    return new Acl(true, [], new Map(), []);
  }

  /**
   * Reads and parses an ACL file. Rejects with `PATH:LINE: what was wrong` on a bad line, or naming the
   * file when it cannot be read.
   */
  static async load(path: string): Promise<Acl> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      throw new Error(`cannot read ACL file ${path}: ${(e as Error).message}`);
    }
    return Acl.parse(text, path);
  }

  /** Parses ACL text; `source` names it in error messages (`SOURCE:LINE: ...`). */
  static parse(text: string, source = "<acl>"): Acl {
    const anonymous: TopicRule[] = [];
    const users = new Map<string, TopicRule[]>();
    const patterns: PatternRule[] = [];
    let current = anonymous;
    const lines = text.split("\n");
    for (let n = 0; n < lines.length; n++) {
      const fail = (message: string): never => {
        throw new Error(`${source}:${n + 1}: ${message}`);
      };
      const line = lines[n].trim();
      if (line === "" || line.startsWith("#")) continue;
      const space = line.search(/\s/);
      const keyword = space < 0 ? line : line.slice(0, space);
      const rest = space < 0 ? "" : line.slice(space).trim();
      switch (keyword) {
        case "user": {
          if (rest === "") fail("'user' needs a username");
          let rules = users.get(rest);
          if (rules === undefined) {
            rules = [];
            users.set(rest, rules);
          }
          current = rules;
          break;
        }
        case "anonymous":
          if (rest !== "") fail(`'anonymous' takes no argument, got '${rest}'`);
          current = anonymous;
          break;
        case "topic":
        case "pattern": {
          const [access, filter] = parseRule(keyword, rest, fail);
          if (keyword === "topic") {
            if (filter.includes("%u") || filter.includes("%c")) {
              fail(`%u / %c are only substituted in 'pattern' lines, not in 'topic ${filter}'`);
            }
            const problem = filterProblem(filter);
            if (problem !== undefined) fail(problem);
            current.push({ access, levels: filter.split("/") });
          } else {
            // Validate the shape with a harmless stand-in for the placeholders.
            const problem = filterProblem(filter.replaceAll("%u", "u").replaceAll("%c", "c"));
            if (problem !== undefined) fail(problem);
            const levels = filter.split("/");
            patterns.push({
              access,
              levels,
              substituted: levels.map((l) => l.includes("%u") || l.includes("%c")),
              usesUsername: filter.includes("%u"),
              usesClientId: filter.includes("%c"),
              dollarFirst: levels[0].startsWith("$"),
            });
          }
          break;
        }
        default:
          fail(`unknown keyword '${keyword}' (expected topic, pattern, user or anonymous)`);
      }
    }
    return new Acl(false, anonymous, users, patterns);
  }

  /** True when the client may publish to the topic name `topic`. */
  canPublish(username: string | undefined, clientId: string, topic: string): boolean {
    if (this.#allowAll) return true;
    return this.#decide(username, clientId, topic.split("/"), "write", levelsMatch);
  }

  /** True when a message on `topic` may be delivered to the client (live, retained or queued). */
  canRead(username: string | undefined, clientId: string, topic: string): boolean {
    if (this.#allowAll) return true;
    return this.#decide(username, clientId, topic.split("/"), "read", levelsMatch);
  }

  /**
   * True when a read rule covers the whole subscription filter (the filter is equal to or narrower than
   * the rule) and no deny rule covers it. A deny rule narrower than the filter does not refuse the
   * subscription: {@link canRead} then filters each delivery. A `$share/{ShareName}/` prefix (§4.8.2) is
   * removed first, since the messages delivered are those of the filter after it.
   */
  canSubscribe(username: string | undefined, clientId: string, filter: string): boolean {
    if (this.#allowAll) return true;
    if (filter.startsWith("$share/")) {
      const slash = filter.indexOf("/", 7);
      if (slash < 0) return false;
      filter = filter.slice(slash + 1);
    }
    if (filter === "") return false;
    return this.#decide(username, clientId, filter.split("/"), "read", levelsCover);
  }

  /** Allowed when some rule grants `want` and no deny rule applies; `test(ruleLevels, subject)`. */
  #decide(
    username: string | undefined,
    clientId: string,
    subject: readonly string[],
    want: Want,
    test: (rule: readonly string[], subject: readonly string[]) => boolean,
  ): boolean {
    let granted = false;
    const rules = username === undefined ? this.#anonymous : this.#users.get(username);
    if (rules !== undefined) {
      for (const rule of rules) {
        if (rule.access === "deny") {
          if (test(rule.levels, subject)) return false;
        } else if (!granted && grants(rule.access, want) && test(rule.levels, subject)) {
          granted = true;
        }
      }
    }
    for (const rule of this.#patterns) {
      if (rule.access !== "deny" && (granted || !grants(rule.access, want))) continue;
      const levels = expand(rule, username, clientId);
      if (levels === undefined || !test(levels, subject)) continue;
      if (rule.access === "deny") return false;
      granted = true;
    }
    return granted;
  }
}

/** Splits the rest of a `topic` / `pattern` line into access and filter. */
function parseRule(keyword: string, rest: string, fail: (message: string) => never): [AclAccess, string] {
  if (rest === "") fail(`'${keyword}' needs a topic filter`);
  const space = rest.search(/\s/);
  const word = space < 0 ? rest : rest.slice(0, space);
  const explicit = ACCESS_WORDS.includes(word);
  let filter = explicit ? rest.slice(word.length).trim() : rest;
  if (explicit && filter === "") fail(`'${keyword} ${word}' needs a topic filter after the access word`);
  // Inside a valid filter '#' is a whole level, never preceded by white space, so " #" starts a comment.
  const comment = filter.search(/\s#/);
  if (comment >= 0) filter = filter.slice(0, comment).trim();
  if (!explicit && /\s/.test(filter)) {
    fail(`unknown access '${word}' in '${keyword} ${filter}' (expected read, write, readwrite or deny)`);
  }
  return [explicit ? word as AclAccess : "readwrite", filter];
}
