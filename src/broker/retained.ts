/**
 * Retained messages (§3.3.1.3): at most one per topic, replaced by the next retained PUBLISH on the
 * topic and cleared by a retained PUBLISH with an empty payload. Kept in a tree of topic levels so a
 * SUBSCRIBE walks only the branches its filter can match.
 *
 * @module
 */

import type { StoredMessage } from "../store/store.ts";
import type { Message } from "./message.ts";

class RNode {
  readonly children = new Map<string, RNode>();
  message?: StoredMessage;
  parent?: RNode;
  level = "";
}

/** The retained messages of the broker. */
export class RetainedStore {
  #root = new RNode();
  #count = 0;

  /** Number of retained messages. */
  get size(): number {
    return this.#count;
  }

  /**
   * Stores (or, with an empty payload, clears) the retained message of `message.topic`. The object is kept
   * as is and marked {@link Message.uncached}.
   */
  set(message: StoredMessage): void {
    if (message.payload.length === 0) {
      this.delete(message.topic);
      return;
    }
    let node = this.#root;
    for (const level of message.topic.split("/")) {
      let child = node.children.get(level);
      if (!child) {
        child = new RNode();
        child.parent = node;
        child.level = level;
        node.children.set(level, child);
      }
      node = child;
    }
    if (!node.message) this.#count++;
    (message as Message).uncached = true;
    node.message = message;
  }

  /** Removes the retained message of a topic. Returns true when there was one. */
  delete(topic: string): boolean {
    let node: RNode | undefined = this.#root;
    for (const level of topic.split("/")) {
      node = node.children.get(level);
      if (!node) return false;
    }
    if (!node.message) return false;
    node.message = undefined;
    this.#count--;
    while (node.parent && !node.message && node.children.size === 0) {
      node.parent.children.delete(node.level);
      node = node.parent;
    }
    return true;
  }

  /** The retained message of one topic name. */
  get(topic: string): StoredMessage | undefined {
    let node: RNode | undefined = this.#root;
    for (const level of topic.split("/")) {
      node = node.children.get(level);
      if (!node) return undefined;
    }
    return node.message;
  }

  /** Calls `fn` for every retained message whose topic matches `filter` (a non-shared filter). */
  forEachMatch(filter: string, fn: (message: StoredMessage) => void): void {
    this.#walk(this.#root, filter.split("/"), 0, fn);
  }

  /** Every retained message, for $SYS counts and tests. */
  forEach(fn: (message: StoredMessage) => void): void {
    this.#all(this.#root, fn, false);
  }

  #all(node: RNode, fn: (message: StoredMessage) => void, skipDollar: boolean): void {
    if (node.message) fn(node.message);
    for (const [level, child] of node.children) {
      if (skipDollar && level.charCodeAt(0) === 36) continue;
      this.#all(child, fn, false);
    }
  }

  #walk(node: RNode, levels: string[], i: number, fn: (message: StoredMessage) => void): void {
    if (i === levels.length) {
      if (node.message) fn(node.message);
      return;
    }
    const level = levels[i];
    const atRoot = i === 0;
    if (level === "#") {
      // "a/#" matches "a" itself and everything below; a leading wildcard skips `$` topics (§4.7.2).
      if (node.message && !atRoot) fn(node.message);
      for (const [name, child] of node.children) {
        if (atRoot && name.charCodeAt(0) === 36) continue;
        this.#all(child, fn, false);
      }
      return;
    }
    if (level === "+") {
      for (const [name, child] of node.children) {
        if (atRoot && name.charCodeAt(0) === 36) continue;
        this.#walk(child, levels, i + 1, fn);
      }
      return;
    }
    const child = node.children.get(level);
    if (child) this.#walk(child, levels, i + 1, fn);
  }
}
