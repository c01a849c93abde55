/**
 * The subscription tree: topic filters stored level by level, matched against topic names with the
 * wildcard rules of §4.7 (`+` one level, `#` the rest including the parent, no wildcard match of a
 * first level starting with `$`, §4.7.2) and shared subscriptions `$share/{group}/{filter}` (§4.8.2).
 *
 * Lookups are cached per topic name (cleared when subscriptions change): with a steady set of
 * subscriptions, routing a message costs one Map lookup instead of a split and a walk.
 *
 * @module
 */

import type { SubscriptionRecord } from "../store/store.ts";

/** The members of one shared subscription group on one filter. */
export class SharedGroup<S> {
  readonly members: { subscriber: S; sub: SubscriptionRecord }[] = [];
  /** Round-robin cursor. */
  next = 0;
  constructor(readonly group: string, readonly filter: string) {}
}

/** Everything subscribed to one topic name. */
export interface MatchResult<S> {
  /** Non-shared subscriptions, possibly several per subscriber (overlapping filters). */
  readonly subscribers: S[];
  readonly subs: SubscriptionRecord[];
  readonly shared: SharedGroup<S>[];
}

/** One filter level; `children` is made with the first child (most nodes are a filter's last level). */
class Node<S> {
  children?: Map<string, Node<S>>;
  subs?: Map<S, SubscriptionRecord>;
  shared?: Map<string, SharedGroup<S>>;
  parent?: Node<S>;
  level = "";

  isEmpty(): boolean {
    return !this.children?.size && !this.subs?.size && !this.shared?.size;
  }
}

const MAX_CACHE = 20_000;
/** Characters of cached topic names at most: 20,000 topics of 64 KiB each would have been 2.6 GB. */
const MAX_CACHE_CHARS = 2_000_000;

/** The subscription tree for subscribers of type `S` (the broker uses its Session). */
export class TopicTree<S> {
  #root = new Node<S>();
  #cache = new Map<string, MatchResult<S>>();
  #cacheChars = 0;
  #count = 0;
  #stackNodes: Node<S>[] = [];
  #stackDepths: number[] = [];

  /** Number of subscriptions (shared members included). */
  get size(): number {
    return this.#count;
  }

  #node(filter: string, create: boolean): Node<S> | undefined {
    let node = this.#root;
    for (const level of filter.split("/")) {
      let child = node.children?.get(level);
      if (!child) {
        if (!create) return undefined;
        child = new Node<S>();
        child.parent = node;
        child.level = level;
        (node.children ??= new Map()).set(level, child);
      }
      node = child;
    }
    return node;
  }

  #prune(node: Node<S>): void {
    while (node.parent && node.isEmpty()) {
      node.parent.children!.delete(node.level);
      node = node.parent;
    }
  }

  /**
   * Adds or replaces the subscription of `subscriber` on `sub.filter`. `share` is the parsed shared
   * group when the filter was `$share/{group}/{filter}`. Returns true when it already existed.
   */
  add(subscriber: S, sub: SubscriptionRecord, share?: { group: string; filter: string }): boolean {
    this.#clearCache();
    const node = this.#node(share ? share.filter : sub.filter, true)!;
    if (share) {
      node.shared ??= new Map();
      let group = node.shared.get(share.group);
      if (!group) {
        group = new SharedGroup<S>(share.group, share.filter);
        node.shared.set(share.group, group);
      }
      const existing = group.members.find((m) => m.subscriber === subscriber);
      if (existing) {
        existing.sub = sub;
        return true;
      }
      group.members.push({ subscriber, sub });
      this.#count++;
      return false;
    }
    node.subs ??= new Map();
    const existed = node.subs.has(subscriber);
    node.subs.set(subscriber, sub);
    if (!existed) this.#count++;
    return existed;
  }

  /** The shared subscription group `group` on `filter`, if it has members. */
  sharedGroup(group: string, filter: string): SharedGroup<S> | undefined {
    return this.#node(filter, false)?.shared?.get(group);
  }

  /** Removes a subscription. Returns true when it existed. */
  remove(subscriber: S, filter: string, share?: { group: string; filter: string }): boolean {
    const node = this.#node(share ? share.filter : filter, false);
    if (!node) return false;
    let removed = false;
    if (share) {
      const group = node.shared?.get(share.group);
      if (group) {
        const i = group.members.findIndex((m) => m.subscriber === subscriber);
        if (i >= 0) {
          group.members.splice(i, 1);
          removed = true;
          if (group.members.length === 0) node.shared!.delete(share.group);
        }
      }
    } else if (node.subs?.delete(subscriber)) {
      removed = true;
    }
    if (removed) {
      this.#count--;
      this.#clearCache();
      this.#prune(node);
    }
    return removed;
  }

  #clearCache(): void {
    this.#cache.clear();
    this.#cacheChars = 0;
  }

  /** All subscriptions matching a topic name. The result is shared and must not be mutated. */
  match(topic: string): MatchResult<S> {
    let result = this.#cache.get(topic);
    if (result) return result;
    const out: MatchResult<S> = { subscribers: [], subs: [], shared: [] };
    this.#walk(this.#root, topic.split("/"), out);
    if (this.#cache.size >= MAX_CACHE || this.#cacheChars + topic.length > MAX_CACHE_CHARS) {
      this.#clearCache();
    }
    this.#cache.set(topic, out);
    this.#cacheChars += topic.length;
    result = out;
    return result;
  }

  #collect(node: Node<S>, out: MatchResult<S>): void {
    if (node.subs) {
      for (const [subscriber, sub] of node.subs) {
        out.subscribers.push(subscriber);
        out.subs.push(sub);
      }
    }
    if (node.shared) { for (const group of node.shared.values()) out.shared.push(group); }
  }

  /**
   * Depth first, "+" before the exact level, over an explicit stack: a topic may have tens of thousands of
   * levels, too deep for a recursion. The stack arrays are reused (a match runs to its end, never nested).
   */
  #walk(root: Node<S>, levels: string[], out: MatchResult<S>): void {
    const nodes = this.#stackNodes;
    const depths = this.#stackDepths;
    nodes.push(root);
    depths.push(0);
    const dollar = levels[0].charCodeAt(0) === 36; // '$': no wildcard matches the first level (§4.7.2)
    while (nodes.length > 0) {
      const node = nodes.pop()!;
      const i = depths.pop()!;
      const children = node.children;
      if (children === undefined) {
        if (i === levels.length) this.#collect(node, out);
        continue;
      }
      const wildcardsAllowed = i > 0 || !dollar;
      if (wildcardsAllowed) {
        const hash = children.get("#");
        if (hash) this.#collect(hash, out); // "a/#" matches "a" and everything below it
      }
      if (i === levels.length) {
        this.#collect(node, out);
        continue;
      }
      const exact = children.get(levels[i]);
      if (exact) {
        nodes.push(exact);
        depths.push(i + 1);
      }
      if (wildcardsAllowed) {
        const plus = children.get("+");
        if (plus) {
          nodes.push(plus);
          depths.push(i + 1);
        }
      }
    }
  }
}
