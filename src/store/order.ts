/**
 * The order `Store.load()` promises: outbound records by clientId then seq, inbound ids by clientId then
 * packet id. Both stores sort with these so they return the same sequence.
 *
 * @module
 */

import type { OutboundRecord } from "./store.ts";

/** Orders strings by UTF-16 code units (plain `<`), independent of locale. */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Orders outbound records by clientId, then seq. */
export function compareOutbound(a: OutboundRecord, b: OutboundRecord): number {
  return compareStrings(a.clientId, b.clientId) || a.seq - b.seq;
}

/** Orders inbound QoS 2 ids by clientId, then packet id. */
export function compareIncoming(
  a: { clientId: string; packetId: number },
  b: { clientId: string; packetId: number },
): number {
  return compareStrings(a.clientId, b.clientId) || a.packetId - b.packetId;
}
