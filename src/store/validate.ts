/**
 * Input checks shared by the stores: `Store.apply` throws for a malformed op at the call site,
 * where the broker bug is, instead of failing a whole batch later inside a commit.
 *
 * @module
 */

import type { StoredMessage, StoreOp } from "./store.ts";

function fail(op: StoreOp, what: string, value: unknown): never {
  throw new TypeError(`invalid ${op.op}: ${what} ${JSON.stringify(value) ?? String(value)}`);
}

function checkClientId(op: StoreOp, clientId: unknown): void {
  if (typeof clientId !== "string") fail(op, "clientId must be a string, got", clientId);
}

function checkMessage(op: StoreOp, m: StoredMessage | undefined): void {
  if (m === undefined || m === null || typeof m !== "object") {
    return fail(op, "message must be an object, got", m);
  }
  if (typeof m.topic !== "string") fail(op, "message.topic must be a string, got", m.topic);
  if (!(m.payload instanceof Uint8Array)) {
    fail(op, "message.payload must be a Uint8Array, got", typeof m.payload);
  }
  if (m.qos !== 0 && m.qos !== 1 && m.qos !== 2) fail(op, "message.qos must be 0, 1 or 2, got", m.qos);
  if (typeof m.receivedAt !== "number") fail(op, "message.receivedAt must be a number, got", m.receivedAt);
}

function checkPacketId(op: StoreOp, packetId: unknown): void {
  if (typeof packetId !== "number" || !Number.isInteger(packetId) || packetId < 1 || packetId > 0xffff) {
    fail(op, "packetId must be an integer 1..65535, got", packetId);
  }
}

function checkSeq(op: StoreOp, seq: unknown): void {
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0) {
    fail(op, "seq must be a non-negative safe integer, got", seq);
  }
}

/**
 * Throws a TypeError naming the op and the bad value when `op` is not a well-formed {@link StoreOp}.
 * Deliberately shallow (types and ranges of the fields the stores key on), so it costs little per op.
 */
export function validateOp(op: StoreOp): void {
  switch (op.op) {
    case "session.put": {
      const s = op.session;
      if (s === null || typeof s !== "object") return fail(op, "session must be an object, got", s);
      checkClientId(op, s.clientId);
      if (!Array.isArray(s.subscriptions)) {
        fail(op, "session.subscriptions must be an array, got", s.subscriptions);
      }
      if (!Number.isSafeInteger(s.expiryInterval) || s.expiryInterval < 0) {
        fail(op, "session.expiryInterval must be a non-negative integer, got", s.expiryInterval);
      }
      return;
    }
    case "session.delete":
      return checkClientId(op, op.clientId);
    case "retained.put":
      return checkMessage(op, op.message);
    case "retained.delete":
      if (typeof op.topic !== "string") fail(op, "topic must be a string, got", op.topic);
      return;
    case "outbound.put": {
      const r = op.record;
      if (r === null || typeof r !== "object") return fail(op, "record must be an object, got", r);
      checkClientId(op, r.clientId);
      checkSeq(op, r.seq);
      if (r.packetId !== undefined) checkPacketId(op, r.packetId);
      if (r.message !== undefined) checkMessage(op, r.message);
      else if (r.state !== "pubrel") fail(op, `record.message is required in state`, r.state);
      return;
    }
    case "outbound.delete":
      checkClientId(op, op.clientId);
      return checkSeq(op, op.seq);
    case "incoming.put":
    case "incoming.delete":
      checkClientId(op, op.clientId);
      return checkPacketId(op, op.packetId);
    default:
      throw new TypeError(`unknown store op ${JSON.stringify((op as { op: unknown }).op)}`);
  }
}
