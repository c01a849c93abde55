/**
 * The durable store on Deno KV, with group commit.
 *
 * `apply()` encodes the record (so later changes by the caller cannot leak in) and folds it into the
 * current batch: a map from key to its last value, so several writes of one key cost one mutation, and
 * a key written and deleted in the same batch that was not in the database before costs nothing. That
 * last rule is what makes QoS 1 to an online persistent subscriber cheap: under load, the in-flight
 * record and its PUBACK's delete meet in the batch that waits while the previous one commits. One batch
 * is committed at a time; ops applied meanwhile go into the next batch, so batches grow with load and the
 * number of commits does not. A batch larger than one atomic commit allows (1000 mutations, ~800 KB) is
 * split into several, committed in order; its flush() resolves after the last.
 *
 * To know whether a key exists without reading it, the store keeps the set of outbound and inbound keys
 * it knows to be in the database (filled by `load()`, or empty for a new database). Until it knows, and
 * after a failed commit, it assumes every key may exist and always writes the delete.
 *
 * Packs: a message queued for a session costs a put now and a delete when it is acknowledged, usually in a
 * later batch. To keep that from costing two mutations per message, new outbound records of one client
 * that arrive in one batch are written together as one value (a pack, bucket "p"); deleting one of them
 * only adds its sequence number to the client's tombstone list (bucket "t", one value per client, rewritten
 * at most once per batch), and the pack key is deleted when its last record goes. A record whose state
 * changes later (QoS 2 PUBREC -> "pubrel") moves to its own key and is tombstoned in its pack. So a busy
 * session costs a few mutations per batch instead of two per message.
 *
 * Key layout and chunking: see `kv_layout.ts`. Record encoding: see `record_codec.ts`.
 *
 * @module
 */

import { dirname } from "node:path";
import { acquireFileLock, type FileLock } from "./file_lock.ts";
import {
  AtomicLimits,
  Bucket,
  type BucketPrefix,
  CHUNK_SIZE,
  INLINE_MAX,
  keySize,
  type NamePart,
  namePart,
  namePartId,
} from "./kv_layout.ts";
import { compareIncoming, compareOutbound } from "./order.ts";
import {
  type ChunkHeader,
  crc32,
  decodeChunkHeader,
  decodeIncoming,
  decodeOutbound,
  decodeRetained,
  decodeSession,
  encodeChunkHeader,
  encodeIncoming,
  encodeOutbound,
  encodeRetained,
  encodeSession,
  PackWriter,
  TAG_CHUNKED,
} from "./record_codec.ts";
import type { OutboundRecord, OutboundSource, RestoredState, Store, StoreOp, StoreStats } from "./store.ts";
import { outboundRecordOf, StoreError } from "./store.ts";
import { validateOp } from "./validate.ts";

/** Options for {@link KvStore}. */
export interface KvStoreOptions {
  /** The database file (`storage.path`); its directory is created. ":memory:" opens a throw-away database. */
  path: string;
  /** Opens the database; defaults to `Deno.openKv`. Tests use it to reach the handle. */
  openKv?: (path: string) => Promise<Deno.Kv>;
}

/** The last write of one key in a batch. */
interface Entry {
  key: Deno.KvKey;
  keyBytes: number;
  /** The encoded record, or null for a delete. */
  value: Uint8Array | null;
  /** The key may be in the database at the start of the batch (a delete must then be written). */
  existed: boolean;
  /** Chunk sub-keys that may be in the database at the start of the batch. */
  chunks: number;
  /** For outbound / inbound keys: the owning client's name id, and the key's id within it. */
  owner?: string;
  sub?: KnownSub;
}

/** Ops applied between two commits, and the promise their flush() callers wait on. */
interface Batch {
  entries: Map<string, Entry>;
  /** Entry ids per owning client, so session.delete can turn them into deletes. */
  owned: Map<string, string[]>;
  /** Clients whose session was deleted: their committed keys are listed and deleted at commit time. */
  sessionDeletes: Map<string, NamePart>;
  /**
   * New outbound records per client (owner id) in this batch, to be written as one pack. Encoded only when
   * the batch is sealed: most are deleted again (acknowledged) before that and never cost an encoding.
   */
  pending: Map<string, PendingOut>;
  /** Clients whose tombstone list changed in this batch. */
  tombDirty: Set<string>;
  /** Clients with an outbound record under a key of its own in this batch (rare: state changes). */
  individualOut: Set<string>;
  ops: number;
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** One physical mutation. */
interface Mutation {
  key: Deno.KvKey;
  value: Uint8Array | null;
  /** Bytes counted against the atomic's total mutation size. */
  bytes: number;
  /** Bytes counted against the atomic's key budget (sets only). */
  setKeyBytes: number;
}

/** Latencies kept when the metrics module does not drain them. */
const MAX_LATENCIES = 10_000;

/**
 * A batch that follows a commit directly waits ~1 ms to grow when it holds fewer ops than this: every commit
 * costs ~0.3 ms of the broker's core (its SQLite work and the atomic op's own), so back-to-back commits of a
 * few hundred ops each spent half the core on committing. A commit after a quiet moment is not delayed.
 */
const BATCH_GATHER_OPS = 1000;

/** A {@link Store} on Deno KV (see the module comment). */
export class KvStore implements Store {
  /** flush() resolves once the data is committed to the database file (false for ":memory:"). */
  get durable(): boolean {
    return this.#path !== ":memory:";
  }
  /**
   * The database file existed but held 0 bytes at open: SQLite takes that for a new database, so the broker
   * starts empty. Worth a warning: a file cut to nothing is what some disk failures leave.
   */
  emptyFileAtOpen = false;
  /** Commits (atomic writes), physical mutations, commit latencies (s), failed batches. */
  readonly stats: StoreStats = { commits: 0, mutations: 0, latencies: [], failures: 0 };

  readonly #path: string;
  readonly #openKv: (path: string) => Promise<Deno.Kv>;
  #kv: Deno.Kv | undefined;
  #lock: FileLock | undefined;
  #closed = false;
  #closing = false;

  /** The batch collecting new ops. */
  #current: Batch | undefined;
  /** The batch being committed. */
  #committing: Batch | undefined;
  #draining = false;
  /** Batches sealed so far: load() uses it to notice writes that raced with it. */
  #sealed = 0;

  /** True when {@link KvStore.#known} lists every outbound / inbound key in the database. */
  #exact = false;
  /** Outbound / inbound keys in the database once sealed batches commit: owner id -> key ids. */
  #known = new Map<string, Set<KnownSub>>();
  /** Chunked records in the database once sealed batches commit: entry id -> chunk count. */
  #chunked = new Map<string, number>();
  /** Packs of outbound records per client (owner id), as the database holds them once sealed batches commit. */
  #packs = new Map<string, PackState>();
  #names = new Map<string, ClientName>();

  constructor(options: KvStoreOptions) {
    this.#path = options.path;
    this.#openKv = options.openKv ?? ((path) => Deno.openKv(path));
  }

  /**
   * Creates the directory, takes the lock and opens the database.
   *
   * @throws StoreError `storage.path <path> is locked by another running broker (pid N)`, or a message
   *   naming the path when it cannot be created or opened.
   */
  async open(): Promise<void> {
    if (this.#kv !== undefined) throw new StoreError(`storage.path ${this.#path} is already open`);
    if (this.#closed) {
      throw new StoreError(`storage.path ${this.#path}: this store was closed; create a new one`);
    }
    const label = `storage.path ${this.#path}`;
    let lock: FileLock | undefined;
    if (this.#path !== ":memory:") {
      try {
        await Deno.mkdir(dirname(this.#path), { recursive: true });
      } catch (e) {
        throw new StoreError(`cannot create the directory of ${label}: ${(e as Error).message}`, {
          cause: e,
        });
      }
      lock = await acquireFileLock(`${this.#path}.lock`, label);
      try {
        this.emptyFileAtOpen = (await Deno.stat(this.#path)).size === 0;
      } catch { /* no file yet: a new database */ }
    }
    let kv: Deno.Kv | undefined;
    let empty = true;
    try {
      kv = await this.#openKv(this.#path);
      // A new, empty database holds no key a delete could be needed for.
      for await (const _ of kv.list({ prefix: [] }, { limit: 1 })) empty = false;
    } catch (e) {
      try {
        kv?.close();
      } catch { /* the open failed half-way; nothing more to release */ }
      await lock?.release();
      throw new StoreError(`cannot open ${label}: ${(e as Error).message}`, { cause: e });
    }
    this.#kv = kv;
    this.#lock = lock;
    this.#exact = empty;
  }

  /**
   * Reads the four buckets back, reassembling chunked records; outbound ordered by clientId then seq.
   * Chunks left without a record (a crash in the middle of a write too large for one commit) are deleted.
   *
   * @throws StoreError naming the key when a record cannot be decoded.
   */
  async load(): Promise<RestoredState> {
    const kv = this.#requireOpen("load");
    await this.flush().catch(() => {}); // a failed batch was reported to its flush() callers
    const sealedBefore = this.#sealed;
    const known = new Map<string, Set<KnownSub>>();
    const chunked = new Map<string, number>();
    const garbage: Deno.KvKey[] = [];
    const state: RestoredState = { sessions: [], retained: [], outbound: [], incoming: [] };

    const read = async (
      bucket: BucketPrefix,
      parentLength: number,
      onRecord: (key: Deno.KvKey, v: Uint8Array) => void,
    ) => {
      for await (const r of readRecords(kv, bucket, parentLength, garbage)) {
        try {
          onRecord(r.key, r.value);
        } catch (e) {
          const why = (e as Error).message;
          throw new StoreError(
            `storage.path ${this.#path}: cannot decode the record at ${formatKey(r.key)}: ${why}`,
            {
              cause: e,
            },
          );
        }
        if (r.chunks > 0) chunked.set(entryIdOfKey(r.key), r.chunks);
      }
    };
    const remember = (key: Deno.KvKey, sub: KnownSub) => {
      const owner = namePartId(key[1] as NamePart);
      let subs = known.get(owner);
      if (subs === undefined) known.set(owner, subs = new Set());
      subs.add(sub);
    };

    await read(Bucket.session, 2, (_, v) => state.sessions.push(decodeSession(v)));
    await read(Bucket.retained, 2, (_, v) => state.retained.push(decodeRetained(v)));
    await read(Bucket.outbound, 3, (key, v) => {
      state.outbound.push(decodeOutbound(v));
      remember(key, key[2] as number);
    });
    await read(Bucket.incoming, 3, (key, v) => {
      state.incoming.push({ clientId: decodeIncoming(v), packetId: key[2] as number });
      remember(key, Bucket.incoming + String(key[2]));
    });
    // Packs and tombstones: a packed record is live unless its seq is tombstoned or it moved to its own key.
    const packs = new Map<string, PackState>();
    const packRecords: { owner: string; id: number; records: OutboundRecord[] }[] = [];
    await read(Bucket.pack, 3, (key, v) => {
      const part = key[1] as NamePart;
      const owner = namePartId(part);
      const id = key[2] as number;
      let ps = packs.get(owner);
      if (ps === undefined) packs.set(owner, ps = newPackState(part));
      if (id >= ps.nextId) ps.nextId = id + 1;
      packRecords.push({ owner, id, records: decodePack(v) });
      remember(key, Bucket.pack + id);
    });
    const tombs = new Map<string, Set<number>>();
    await read(Bucket.tomb, 2, (key, v) => {
      tombs.set(namePartId(key[1] as NamePart), new Set(decodeSeqs(v)));
      remember(key, Bucket.tomb);
    });
    await read(Bucket.looseTomb, 3, (key) => {
      const owner = namePartId(key[1] as NamePart);
      let set = tombs.get(owner);
      if (set === undefined) tombs.set(owner, set = new Set());
      set.add(key[2] as number);
      remember(key, Bucket.looseTomb + String(key[2]));
    });
    // Records with keys of their own, by client: a packed copy of one of them is stale.
    const individual = new Map<string, Set<number>>();
    for (const r of state.outbound) {
      let seqs = individual.get(r.clientId);
      if (seqs === undefined) individual.set(r.clientId, seqs = new Set());
      seqs.add(r.seq);
    }
    for (const { owner, id, records } of packRecords) {
      const ps = packs.get(owner)!;
      const tomb = tombs.get(owner);
      const own = records.length > 0 ? individual.get(records[0].clientId) : undefined;
      records.sort((a, b) => a.seq - b.seq);
      const pk: Pack = { id, seqs: [], live: new Uint8Array(records.length), liveCount: 0 };
      for (let i = 0; i < records.length; i++) {
        const r = records[i];
        pk.seqs.push(r.seq);
        if (tomb?.has(r.seq) || own?.has(r.seq)) continue;
        pk.live[i] = 1;
        pk.liveCount++;
        state.outbound.push(r);
      }
      if (pk.liveCount === 0) {
        garbage.push([Bucket.pack, ps.part, id]);
        continue;
      }
      addPack(ps, pk);
    }
    // Hashed client ids do not sort by the id itself.
    state.outbound.sort(compareOutbound);
    state.incoming.sort(compareIncoming);

    for (let i = 0; i < garbage.length; i += 500) {
      const atomic = kv.atomic();
      for (const key of garbage.slice(i, i + 500)) atomic.delete(key);
      await atomic.commit();
    }
    // Only trust the listing if no batch was sealed while it ran.
    if (this.#sealed === sealedBefore && this.#current === undefined) {
      this.#known = known;
      this.#chunked = chunked;
      this.#packs = packs;
      this.#exact = true;
    }
    return state;
  }

  /**
   * Folds `op` into the current batch and schedules a commit if none is running.
   *
   * @throws TypeError for a malformed op; StoreError when the store is not open.
   */
  apply(op: StoreOp): void {
    if (this.#kv === undefined || this.#closing) {
      throw new StoreError(`cannot apply ${op.op}: storage.path ${this.#path} is not open`);
    }
    validateOp(op);
    const batch = this.#current ??= newBatch();
    switch (op.op) {
      case "session.put": {
        const part = namePart(op.session.clientId);
        const key = [Bucket.session, part];
        this.#touch(batch, entryId(Bucket.session, namePartId(part)), key, encodeSession(op.session));
        break;
      }
      case "session.delete": {
        const part = namePart(op.clientId);
        const owner = namePartId(part);
        batch.pending.delete(owner);
        batch.tombDirty.delete(owner);
        this.#packs.delete(owner);
        this.#names.delete(op.clientId); // an ended session's name is not kept until the cache fills
        this.#touch(batch, entryId(Bucket.session, owner), [Bucket.session, part], null);
        // Everything the client owned so far in this batch goes; what is committed is listed at commit.
        for (const id of batch.owned.get(owner) ?? []) batch.entries.get(id)!.value = null;
        batch.sessionDeletes.set(owner, part);
        break;
      }
      case "retained.put": {
        const part = namePart(op.message.topic);
        const key = [Bucket.retained, part];
        this.#touch(batch, entryId(Bucket.retained, namePartId(part)), key, encodeRetained(op.message));
        break;
      }
      case "retained.delete": {
        const part = namePart(op.topic);
        this.#touch(batch, entryId(Bucket.retained, namePartId(part)), [Bucket.retained, part], null);
        break;
      }
      case "outbound.put":
        this.#putOutbound(batch, op.record.clientId, op.record.seq, -1, op.record);
        break;
      case "outbound.delete":
        this.#deleteOutbound(batch, op.clientId, op.seq);
        break;
      case "incoming.put":
        this.#touchOwned(batch, Bucket.incoming, op.clientId, op.packetId, encodeIncoming(op.clientId));
        break;
      case "incoming.delete":
        this.#touchOwned(batch, Bucket.incoming, op.clientId, op.packetId, null);
        break;
    }
    this.#applied(batch);
  }

  /** See {@link Store.putOutbound}: the source is encoded when the batch is sealed, if still live then. */
  putOutbound(clientId: string, state: "queued" | "publish", packetId: number, source: OutboundSource): void {
    const batch = this.#batchFor("outbound.put");
    this.#putOutbound(batch, clientId, source.seq, state === "queued" ? 0 : 0x10000 + packetId, source);
    this.#applied(batch);
  }

  /** See {@link Store.deleteOutbound}. */
  deleteOutbound(clientId: string, seq: number): void {
    const batch = this.#batchFor("outbound.delete");
    this.#deleteOutbound(batch, clientId, seq);
    this.#applied(batch);
  }

  #batchFor(what: string): Batch {
    if (this.#kv === undefined || this.#closing) {
      throw new StoreError(`cannot apply ${what}: storage.path ${this.#path} is not open`);
    }
    return this.#current ??= newBatch();
  }

  #applied(batch: Batch): void {
    batch.ops++;
    if (!this.#draining) {
      this.#draining = true;
      queueMicrotask(() => void this.#drain());
    }
  }

  /**
   * The promise of the batch holding the latest op: it resolves when that op and all before it are
   * committed, and rejects with a StoreError when that batch's commit failed.
   */
  flush(): Promise<void> {
    return (this.#current ?? this.#committing)?.promise ?? Promise.resolve();
  }

  /** See {@link Store.idle}: no batch gathering or committing. */
  get idle(): boolean {
    return this.#current === undefined && this.#committing === undefined;
  }

  /** Flushes, closes the database and releases the lock. Rejects if the final flush failed (after closing). */
  async close(): Promise<void> {
    if (this.#kv === undefined || this.#closing) return;
    // From here apply() refuses: an op accepted now could miss the final flush.
    this.#closing = true;
    let failure: unknown;
    try {
      await this.flush();
    } catch (e) {
      failure = e;
    }
    const kv = this.#kv;
    this.#kv = undefined;
    this.#closed = true;
    try {
      kv.close();
    } catch {
      // Already closed underneath us: nothing left to release.
    }
    await this.#lock?.release();
    this.#lock = undefined;
    if (failure !== undefined) throw failure;
  }

  #requireOpen(what: string): Deno.Kv {
    if (this.#kv === undefined) {
      throw new StoreError(`cannot ${what}: storage.path ${this.#path} is not open`);
    }
    return this.#kv;
  }

  #touch(
    batch: Batch,
    id: string,
    key: Deno.KvKey,
    value: Uint8Array | null,
    owner?: string,
    sub?: KnownSub,
  ): void {
    const entry = batch.entries.get(id);
    if (entry !== undefined) {
      entry.value = value;
      return;
    }
    const existed = owner === undefined || !this.#exact || (this.#known.get(owner)?.has(sub!) ?? false);
    batch.entries.set(id, {
      key,
      keyBytes: keySize(key),
      value,
      existed,
      chunks: this.#chunked.get(id) ?? 0,
      owner,
      sub,
    });
    if (owner !== undefined) {
      const ids = batch.owned.get(owner);
      if (ids === undefined) batch.owned.set(owner, [id]);
      else ids.push(id);
    }
  }

  #touchOwned(
    batch: Batch,
    bucket: BucketPrefix,
    clientId: string,
    n: number,
    value: Uint8Array | null,
  ): void {
    const { part, owner } = this.#name(clientId);
    let sub: KnownSub;
    if (bucket === Bucket.outbound) {
      sub = n;
      batch.individualOut.add(owner);
    } else {
      sub = bucket + String(n);
    }
    this.#touch(batch, entryId(bucket, owner, n), [bucket, part, n], value, owner, sub);
  }

  /**
   * The key part and owner id of a client id, cached: building them per op (and hashing a new owner string
   * for every map lookup) was a large part of the cost of an outbound put or delete.
   */
  #name(clientId: string): ClientName {
    let name = this.#names.get(clientId);
    if (name === undefined) {
      if (this.#names.size >= MAX_CACHED_NAMES) this.#names.clear();
      const part = namePart(clientId);
      name = { part, owner: namePartId(part) };
      this.#names.set(clientId, name);
    }
    return name;
  }

  /**
   * An outbound put: into the batch's pending records of the client (a pack at seal) when the key is new,
   * else under a key of its own. `state` is -1 when `item` is a full record, else see {@link PendingOut}.
   */
  #putOutbound(
    batch: Batch,
    clientId: string,
    seq: number,
    state: number,
    item: OutboundRecord | OutboundSource,
  ): void {
    const { part, owner } = this.#name(clientId);
    const pending = batch.pending.get(owner);
    if (pending !== undefined) {
      const i = indexOfSeq(pending.seqs, pending.ordered, seq);
      if (i >= 0) {
        // Rewritten (or put again after a delete) within its batch: still one pack entry.
        if (pending.items[i] === undefined) pending.live++;
        if (i < pending.first) pending.first = i;
        pending.items[i] = item;
        pending.states[i] = state;
        return;
      }
    }
    const packs = this.#packs.get(owner);
    const pk = packs === undefined ? undefined : locate(packs, seq);
    const individual = this.#hasOwnKey(batch, owner, seq);
    if (this.#exact && pk === undefined && !individual && (packs === undefined || !isPacked(packs, seq))) {
      let p = pending;
      if (p === undefined) {
        batch.pending.set(
          owner,
          p = { clientId, part, seqs: [], items: [], states: [], live: 0, first: 0, ordered: true },
        );
      }
      const n = p.seqs.length;
      if (n > 0 && p.seqs[n - 1] >= seq) p.ordered = false;
      p.seqs.push(seq);
      p.items.push(item);
      p.states.push(state);
      p.live++;
      return;
    }
    if (pk !== undefined) this.#removeFromPack(batch, owner, packs!, pk, foundSlot);
    const value = encodeOutbound(
      state === -1 ? item as OutboundRecord : outboundRecordOf(
        clientId,
        state === 0 ? "queued" : "publish",
        state & 0xffff,
        item as OutboundSource,
      ),
    );
    this.#touchOwned(batch, Bucket.outbound, clientId, seq, value);
  }

  /** True when the client's outbound record `seq` has (or gets in this batch) a key of its own. */
  #hasOwnKey(batch: Batch, owner: string, seq: number): boolean {
    return (this.#known.get(owner)?.has(seq) ?? false) ||
      (batch.individualOut.has(owner) && batch.entries.has(entryId(Bucket.outbound, owner, seq)));
  }

  #deleteOutbound(batch: Batch, clientId: string, seq: number): void {
    const { part, owner } = this.#name(clientId);
    const pending = batch.pending.get(owner);
    if (pending !== undefined) {
      // Acks mostly come in order: the oldest live record first.
      let i = pending.first;
      if (pending.seqs[i] !== seq) i = indexOfSeq(pending.seqs, pending.ordered, seq);
      if (i >= 0 && pending.items[i] !== undefined) {
        pending.items[i] = undefined; // put and deleted in one batch: never written
        pending.live--;
        if (i === pending.first) {
          const items = pending.items;
          let f = i + 1;
          while (f < items.length && items[f] === undefined) f++;
          pending.first = f;
          if (f > 1024 && f * 2 > items.length) {
            // Drop the acknowledged prefix: a long array of references to young objects costs every
            // young-generation collection a walk over it once the array itself is old.
            pending.seqs = pending.seqs.slice(f);
            pending.items = items.slice(f);
            pending.states = pending.states.slice(f);
            pending.first = 0;
          }
        }
        return;
      }
    }
    if (!this.#exact) {
      // Before load() the packs are unknown: the seq may sit in one, so leave a tombstone key of its own.
      this.#touch(
        batch,
        entryId(Bucket.looseTomb, owner, seq),
        [Bucket.looseTomb, part, seq],
        LOOSE_TOMB,
        owner,
        Bucket.looseTomb + seq,
      );
    }
    const packs = this.#packs.get(owner);
    const pk = packs === undefined ? undefined : locate(packs, seq);
    if (pk !== undefined) {
      this.#removeFromPack(batch, owner, packs!, pk, foundSlot);
      // It may also have moved to its own key (state change): delete that too if so.
      if (!this.#hasOwnKey(batch, owner, seq)) return;
    }
    this.#touchOwned(batch, Bucket.outbound, clientId, seq, null);
  }

  /** Takes one record out of its pack: a tombstone, or the pack's deletion when it was the last one. */
  #removeFromPack(batch: Batch, owner: string, packs: PackState, pk: Pack, slot: number): void {
    pk.live[slot] = 0;
    pk.liveCount--;
    if (pk.liveCount === 0) {
      packs.packs.splice(packs.packs.indexOf(pk), 1);
      packs.dead -= pk.seqs.length - 1; // its other records were tombstones
      this.#touch(
        batch,
        entryId(Bucket.pack, owner, pk.id),
        [Bucket.pack, packs.part, pk.id],
        null,
        owner,
        Bucket.pack + pk.id,
      );
    } else {
      packs.dead++;
    }
    batch.tombDirty.add(owner);
  }

  /** Turns the batch's new outbound records into pack entries and its tombstone changes into one write each. */
  #materialize(batch: Batch): void {
    for (const [owner, p] of batch.pending) {
      if (p.live === 0) continue;
      let packs = this.#packs.get(owner);
      if (packs === undefined) this.#packs.set(owner, packs = newPackState(p.part));
      this.#writePacks(batch, owner, packs, p);
    }
    batch.pending.clear();
    for (const owner of batch.tombDirty) {
      const packs = this.#packs.get(owner);
      if (packs === undefined) continue;
      const value = packs.dead > 0 ? encodeTombstones(packs) : null;
      this.#touch(batch, entryId(Bucket.tomb, owner), [Bucket.tomb, packs.part], value, owner, Bucket.tomb);
    }
    batch.tombDirty.clear();
  }

  /** Writes one client's live pending records as packs of at most {@link PACK_BYTES}, in seq order. */
  #writePacks(batch: Batch, owner: string, packs: PackState, p: PendingOut): void {
    const { seqs, items, states } = p;
    let order: number[] | undefined;
    if (!p.ordered) {
      order = [];
      for (let i = 0; i < seqs.length; i++) if (items[i] !== undefined) order.push(i);
      order.sort((a, b) => seqs[a] - seqs[b]);
    }
    const clientId = p.clientId;
    let w: PackWriter | undefined;
    let packSeqs: number[] = [];
    const emit = () => {
      const pk: Pack = {
        id: packs.nextId++,
        seqs: packSeqs,
        live: new Uint8Array(packSeqs.length),
        liveCount: 0,
      };
      pk.live.fill(1);
      pk.liveCount = packSeqs.length;
      addPack(packs, pk);
      this.#touch(
        batch,
        entryId(Bucket.pack, owner, pk.id),
        [Bucket.pack, p.part, pk.id],
        w!.finish(),
        owner,
        Bucket.pack + pk.id,
      );
      w = undefined;
      packSeqs = [];
    };
    const n = order === undefined ? seqs.length : order.length;
    for (let k = 0; k < n; k++) {
      const i = order === undefined ? k : order[k];
      const item = items[i];
      if (item === undefined) continue;
      const state = states[i];
      const hint = state === -1
        ? 4 + (item as OutboundRecord).clientId.length * 3 + 64 +
          ((item as OutboundRecord).message?.payload.length ?? 0)
        : PackWriter.sizeHint(clientId, item as OutboundSource);
      if (w !== undefined && w.size + hint > PACK_BYTES) emit();
      w ??= new PackWriter(Math.max(hint, Math.min(PACK_BYTES, p.live * hint)));
      if (state === -1) w.add(item as OutboundRecord);
      else if (state === 0) w.addSource(clientId, "queued", 0, item as OutboundSource);
      else w.addSource(clientId, "publish", state & 0xffff, item as OutboundSource);
      packSeqs.push(seqs[i]);
    }
    if (w !== undefined) emit();
  }

  /** Commits batches one after another until none is pending. Never throws. */
  async #drain(): Promise<void> {
    while (this.#current !== undefined) {
      if (this.#committing !== undefined && this.#current.ops < BATCH_GATHER_OPS) {
        // Back to back with the previous commit and still small: gather for a moment (see BATCH_GATHER_OPS).
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      const batch = this.#current;
      this.#current = undefined;
      this.#committing = batch;
      try {
        // Inside the try: encoding the batch's records can fail, and that must fail the batch, not the loop.
        this.#materialize(batch);
        this.#seal(batch);
        await this.#write(batch);
        batch.resolve();
      } catch (e) {
        this.stats.failures++;
        // What reached the database is unknown now: stop assuming a key is absent.
        this.#exact = false;
        const why = (e as Error).message;
        batch.reject(
          e instanceof StoreError
            ? e
            : new StoreError(`storage.path ${this.#path}: a batch of ${batch.ops} ops failed: ${why}`, {
              cause: e,
            }),
        );
      }
    }
    this.#committing = undefined;
    this.#draining = false;
  }

  /**
   * Records the batch's outcome in #known / #chunked before any await, so ops applied while it commits
   * see the database as it will be.
   */
  #seal(batch: Batch): void {
    this.#sealed++;
    for (const owner of batch.sessionDeletes.keys()) {
      this.#known.delete(owner);
      const prefixes = [Bucket.outbound, Bucket.incoming, Bucket.pack, Bucket.looseTomb].map((b) =>
        entryId(b, owner, "")
      );
      prefixes.push(entryId(Bucket.tomb, owner));
      for (const id of this.#chunked.keys()) {
        if (prefixes.some((p) => id.startsWith(p))) this.#chunked.delete(id);
      }
    }
    for (const [id, e] of batch.entries) {
      if (e.owner !== undefined) {
        let subs = this.#known.get(e.owner);
        if (e.value !== null) {
          if (subs === undefined) this.#known.set(e.owner, subs = new Set());
          subs.add(e.sub!);
        } else if (subs !== undefined) {
          subs.delete(e.sub!);
          if (subs.size === 0) this.#known.delete(e.owner);
        }
      }
      const chunks = e.value !== null && e.value.length > INLINE_MAX
        ? Math.ceil(e.value.length / CHUNK_SIZE)
        : 0;
      if (chunks > 0) this.#chunked.set(id, chunks);
      else this.#chunked.delete(id);
    }
  }

  /** Lists what deleted sessions own, then packs the batch into atomic commits and runs them in order. */
  async #write(batch: Batch): Promise<void> {
    const kv = this.#kv;
    if (kv === undefined) throw new StoreError(`storage.path ${this.#path} was closed before the commit`);
    for (const [owner, part] of batch.sessionDeletes) {
      for (const bucket of [Bucket.outbound, Bucket.incoming, Bucket.pack, Bucket.tomb, Bucket.looseTomb]) {
        const parentLength = bucket === Bucket.tomb ? 2 : 3;
        for await (const { key } of kv.list({ prefix: [bucket, part] }, { batchSize: 1000 })) {
          const parent = key.length > parentLength ? key.slice(0, parentLength) : key;
          const id = entryId(bucket, owner, parent[2] as number | undefined);
          let entry = batch.entries.get(id);
          if (entry === undefined) {
            entry = { key: parent, keyBytes: keySize(parent), value: null, existed: true, chunks: 0 };
            batch.entries.set(id, entry);
          }
          entry.existed = true;
          if (key.length > parentLength) {
            entry.chunks = Math.max(entry.chunks, (key[parentLength] as number) + 1);
          }
        }
      }
    }
    const atomics = pack(commitOrder(batch));
    for (let i = 0; i < atomics.length; i++) {
      const atomic = kv.atomic();
      for (const m of atomics[i]) {
        if (m.value === null) atomic.delete(m.key);
        else atomic.set(m.key, m.value);
      }
      const started = performance.now();
      let result: Deno.KvCommitResult | Deno.KvCommitError;
      try {
        result = await atomic.commit();
      } catch (e) {
        throw new StoreError(
          `storage.path ${this.#path}: atomic commit ${i + 1} of ${atomics.length} (${atomics[i].length} ` +
            `mutations, batch of ${batch.ops} ops) failed: ${(e as Error).message}`,
          { cause: e },
        );
      }
      if (!result.ok) {
        throw new StoreError(
          `storage.path ${this.#path}: atomic commit ${i + 1} of ${atomics.length} was refused`,
        );
      }
      this.stats.commits++;
      this.stats.mutations += atomics[i].length;
      const latencies = this.stats.latencies;
      latencies.push((performance.now() - started) / 1000);
      if (latencies.length > MAX_LATENCIES) latencies.splice(0, latencies.length - MAX_LATENCIES / 2);
    }
  }
}

function newBatch(): Batch {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A batch nobody flushed (QoS 0 traffic) must not become an unhandled rejection that ends the process;
  // callers of flush() still see the rejection on the same promise.
  promise.catch(() => {});
  return {
    entries: new Map(),
    owned: new Map(),
    sessionDeletes: new Map(),
    pending: new Map(),
    tombDirty: new Set(),
    individualOut: new Set(),
    ops: 0,
    promise,
    resolve,
    reject,
  };
}

/** Identifies a record key within a batch: bucket, then name id, then seq / packet id. */
/** Cached client names (see `KvStore.#name`); the cache starts over when it reaches this size. */
const MAX_CACHED_NAMES = 100_000;

/**
 * What {@link KvStore.#known} lists per client: the seq number of an outbound record under its own key, or
 * bucket letter + number for the other keys (numbers keep the per-message check free of string building).
 */
type KnownSub = number | string;

interface ClientName {
  part: NamePart;
  owner: string;
}

function entryId(bucket: BucketPrefix, nameId: string, n?: number | string): string {
  return n === undefined ? bucket + "\0" + nameId : bucket + "\0" + nameId + "\0" + n;
}

function entryIdOfKey(key: Deno.KvKey): string {
  const bucket = key[0] as BucketPrefix;
  const name = namePartId(key[1] as NamePart);
  return key.length === 3 ? entryId(bucket, name, key[2] as number) : entryId(bucket, name);
}

function setMutation(key: Deno.KvKey, keyBytes: number, value: Uint8Array): Mutation {
  return { key, value, bytes: 2 * keyBytes + value.length, setKeyBytes: keyBytes };
}

function deleteMutation(key: Deno.KvKey, keyBytes: number): Mutation {
  return { key, value: null, bytes: 2 * keyBytes, setKeyBytes: 0 };
}

/** The mutations that take one key from its state at batch start to its last value. */
function mutationsOf(e: Entry): Mutation[] {
  const out: Mutation[] = [];
  const chunkKeyBytes = e.keyBytes + 9;
  const chunkKey = (i: number) => [...e.key, i];
  if (e.value === null) {
    if (!e.existed && e.chunks === 0) return out; // written and deleted within the batch: nothing to do
    out.push(deleteMutation(e.key, e.keyBytes));
    for (let i = 0; i < e.chunks; i++) out.push(deleteMutation(chunkKey(i), chunkKeyBytes));
    return out;
  }
  if (e.value.length <= INLINE_MAX) {
    out.push(setMutation(e.key, e.keyBytes, e.value));
    for (let i = 0; i < e.chunks; i++) out.push(deleteMutation(chunkKey(i), chunkKeyBytes));
    return out;
  }
  // Chunks first, header last: if the record needs more than one atomic commit and the process dies in
  // between, load() finds the header missing or its CRC wrong and drops the pieces.
  const count = Math.ceil(e.value.length / CHUNK_SIZE);
  for (let i = 0; i < count; i++) {
    out.push(setMutation(chunkKey(i), chunkKeyBytes, e.value.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE)));
  }
  for (let i = count; i < e.chunks; i++) out.push(deleteMutation(chunkKey(i), chunkKeyBytes));
  const header = encodeChunkHeader({ count, length: e.value.length, crc: crc32(e.value) });
  out.push(setMutation(e.key, e.keyBytes, header));
  return out;
}

/**
 * The batch's entries in the order they are committed, which matters when the batch needs more than one
 * atomic commit and the process dies between two. The deletes of deleted sessions' keys go first, so a session
 * started over never gets back what the old one had. Inbound QoS 2 packet ids go last, so an id is never on
 * disk without every copy of its message: a publisher that resends after such a crash (it got no PUBREC)
 * has its message routed again, a duplicate at worst for subscribers whose copies had landed, never a loss.
 */
function* commitOrder(batch: Batch): Generator<Entry> {
  const deleted = batch.sessionDeletes;
  const oldKeyOfDeleted = (e: Entry) => e.value === null && e.owner !== undefined && deleted.has(e.owner);
  if (deleted.size > 0) {
    for (const e of batch.entries.values()) if (oldKeyOfDeleted(e)) yield e;
  }
  let ids: Entry[] | undefined;
  for (const e of batch.entries.values()) {
    if (oldKeyOfDeleted(e)) continue;
    if (e.value !== null && e.key[0] === Bucket.incoming) (ids ??= []).push(e);
    else yield e;
  }
  if (ids !== undefined) yield* ids;
}

/**
 * Packs the entries' mutations into atomic commits within {@link AtomicLimits}, in order. One record's
 * mutations share a commit unless they cannot fit in an empty one.
 */
function pack(entries: Iterable<Entry>): Mutation[][] {
  const atomics: Mutation[][] = [];
  let current: Mutation[] = [];
  let bytes = 0;
  let setKeyBytes = 0;
  const fits = (n: number, b: number, k: number) =>
    current.length + n <= AtomicLimits.mutations && bytes + b <= AtomicLimits.totalBytes &&
    setKeyBytes + k <= AtomicLimits.setKeyBytes;
  const add = (m: Mutation) => {
    current.push(m);
    bytes += m.bytes;
    setKeyBytes += m.setKeyBytes;
  };
  const cut = () => {
    if (current.length > 0) atomics.push(current);
    current = [];
    bytes = 0;
    setKeyBytes = 0;
  };
  for (const e of entries) {
    const group = mutationsOf(e);
    if (group.length === 0) continue;
    let b = 0;
    let k = 0;
    for (const m of group) {
      b += m.bytes;
      k += m.setKeyBytes;
    }
    if (!fits(group.length, b, k)) cut();
    for (const m of group) {
      if (!fits(1, m.bytes, m.setKeyBytes)) cut();
      add(m);
    }
  }
  cut();
  return atomics;
}

/** A record read back: its key, its bytes (reassembled if chunked) and how many chunks it had. */
interface ReadRecord {
  key: Deno.KvKey;
  value: Uint8Array;
  chunks: number;
}

/**
 * Lists one bucket and yields its records, joining chunked ones. Chunks that belong to no complete record
 * (orphans, torn writes) are added to `garbage`.
 */
async function* readRecords(
  kv: Deno.Kv,
  bucket: BucketPrefix,
  parentLength: number,
  garbage: Deno.KvKey[],
): AsyncGenerator<ReadRecord> {
  // A chunked record being assembled: sub-keys follow their parent directly in key order.
  let pending:
    | { key: Deno.KvKey; count: number; length: number; crc: number; parts: Uint8Array[] }
    | undefined;
  const finish = (): ReadRecord | undefined => {
    if (pending === undefined) return undefined;
    const p = pending;
    pending = undefined;
    const value = new Uint8Array(p.length);
    let off = 0;
    for (const part of p.parts) {
      if (off + part.length > p.length) break;
      value.set(part, off);
      off += part.length;
    }
    if (p.parts.length === p.count && off === p.length && crc32(value) === p.crc) {
      return { key: p.key, value, chunks: p.count };
    }
    garbage.push(p.key);
    for (let i = 0; i < p.parts.length; i++) garbage.push([...p.key, i]);
    return undefined;
  };
  for await (const { key, value } of kv.list<Uint8Array>({ prefix: [bucket] }, { batchSize: 1000 })) {
    if (key.length === parentLength) {
      const done = finish();
      if (done) yield done;
      if (!(value instanceof Uint8Array)) {
        throw new StoreError(
          `expected bytes at ${formatKey(key)}, found ${typeof value}: not written by this store`,
        );
      }
      if (value[0] === TAG_CHUNKED) {
        let h: ChunkHeader;
        try {
          h = decodeChunkHeader(value);
        } catch (e) {
          throw new StoreError(
            `cannot decode the chunk header at ${formatKey(key)}: ${(e as Error).message}`,
          );
        }
        pending = { key, count: h.count, length: h.length, crc: h.crc, parts: [] };
      } else {
        yield { key, value, chunks: 0 };
      }
    } else if (
      key.length === parentLength + 1 && pending !== undefined && pending.parts.length < pending.count &&
      key[parentLength] === pending.parts.length &&
      sameKey(key, pending.key, parentLength) && value instanceof Uint8Array
    ) {
      pending.parts.push(value);
    } else {
      // A chunk of an inline (rewritten) record, or beyond the header's count: left by a crash or failure.
      garbage.push(key);
    }
  }
  const done = finish();
  if (done) yield done;
}

function sameKey(a: Deno.KvKey, b: Deno.KvKey, length: number): boolean {
  for (let i = 0; i < length; i++) {
    const x = a[i];
    const y = b[i];
    if (x instanceof Uint8Array && y instanceof Uint8Array) {
      if (x.length !== y.length || x.some((v, j) => v !== y[j])) return false;
    } else if (x !== y) return false;
  }
  return true;
}

function formatKey(key: Deno.KvKey): string {
  return "[" + key.map((p) => p instanceof Uint8Array ? namePartId(p) : JSON.stringify(p)).join(", ") + "]";
}

/** Value of a loose tombstone key (its key says everything). */
const LOOSE_TOMB = new Uint8Array([1]);

/** Largest encoded pack: comfortably one value, so packs never need chunks. */
const PACK_BYTES = 48 * 1024;

/**
 * New outbound records of one client in a batch, in put order, as parallel arrays: no object per record.
 * `states[i]` is -1 when `items[i]` is a full {@link OutboundRecord}; otherwise `items[i]` is the broker's
 * {@link OutboundSource}, in state "queued" (0) or "publish" (0x10000 + packet id). An item is undefined
 * once deleted again within the batch.
 */
interface PendingOut {
  clientId: string;
  part: NamePart;
  seqs: number[];
  items: (OutboundRecord | OutboundSource | undefined)[];
  states: number[];
  /** Items not deleted again. */
  live: number;
  /** No live item before this index. */
  first: number;
  /** `seqs` strictly ascending (always, from the broker): lookups bisect. */
  ordered: boolean;
}

/** One pack as the database holds it: the seqs written in it (ascending) and which are still live. */
interface Pack {
  id: number;
  seqs: number[];
  /** 1 while the record at the same index is live, 0 once tombstoned. */
  live: Uint8Array;
  liveCount: number;
}

/** The packs of one client. */
interface PackState {
  part: NamePart;
  /** Packs with live records, by id (oldest first). */
  packs: Pack[];
  /** Each pack's seqs lie above the previous pack's: a seq is found by bisecting. */
  ordered: boolean;
  /** Tombstoned seqs in {@link PackState.packs}: the length of the tombstone list. */
  dead: number;
  nextId: number;
}

function newPackState(part: NamePart): PackState {
  return { part, packs: [], ordered: true, dead: 0, nextId: 0 };
}

/** Appends a pack (ids only grow) and keeps {@link PackState.ordered} and the dead count right. */
function addPack(ps: PackState, pk: Pack): void {
  const prev = ps.packs[ps.packs.length - 1];
  if (prev !== undefined && prev.seqs[prev.seqs.length - 1] >= pk.seqs[0]) ps.ordered = false;
  if (pk.id >= ps.nextId) ps.nextId = pk.id + 1;
  ps.packs.push(pk);
  ps.dead += pk.seqs.length - pk.liveCount;
}

/** Slot of the record {@link locate} found (a second return value, without an object per call). */
let foundSlot = 0;

/** The pack holding `seq` as a live record, with its index in {@link foundSlot}; undefined if none. */
function locate(ps: PackState, seq: number): Pack | undefined {
  const packs = ps.packs;
  const n = packs.length;
  if (n === 0) return undefined;
  if (ps.ordered) {
    const last = packs[n - 1].seqs;
    if (seq < packs[0].seqs[0] || seq > last[last.length - 1]) return undefined;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (packs[mid].seqs[0] <= seq) lo = mid;
      else hi = mid - 1;
    }
    const pk = packs[lo];
    const i = indexOfSeq(pk.seqs, true, seq);
    if (i < 0 || pk.live[i] === 0) return undefined;
    foundSlot = i;
    return pk;
  }
  for (const pk of packs) {
    const i = pk.seqs.indexOf(seq);
    if (i >= 0 && pk.live[i] === 1) {
      foundSlot = i;
      return pk;
    }
  }
  return undefined;
}

/**
 * True when `seq` was written in one of the client's packs, live or tombstoned. A tombstoned seq put again
 * must not go into a new pack: the client's tombstone list names seqs, and would hide it there.
 */
function isPacked(ps: PackState, seq: number): boolean {
  const packs = ps.packs;
  const n = packs.length;
  if (n === 0) return false;
  const last = packs[n - 1].seqs;
  if (ps.ordered && seq > last[last.length - 1]) return false; // the usual case: a new, higher seq
  for (const pk of packs) if (pk.seqs.includes(seq)) return true;
  return false;
}

/** Index of `seq` in `seqs` (bisecting when ascending), or -1. */
function indexOfSeq(seqs: number[], ascending: boolean, seq: number): number {
  if (!ascending) return seqs.lastIndexOf(seq);
  let lo = 0;
  let hi = seqs.length - 1;
  if (hi < 0 || seq > seqs[hi] || seq < seqs[0]) return -1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = seqs[mid];
    if (v === seq) return mid;
    if (v < seq) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** The records of a pack value (see {@link PackWriter}); their payloads are views into `value`. */
function decodePack(value: Uint8Array): OutboundRecord[] {
  const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
  const out: OutboundRecord[] = [];
  let off = 0;
  while (off < value.length) {
    if (off + 4 > value.length) throw new Error("truncated pack");
    const len = view.getUint32(off);
    if (off + 4 + len > value.length) throw new Error("truncated pack record");
    out.push(decodeOutbound(value, off + 4, off + 4 + len));
    off += 4 + len;
  }
  return out;
}

/** The client's tombstone list: every tombstoned seq of its packs, float64 each. */
function encodeTombstones(ps: PackState): Uint8Array {
  const out = new Uint8Array(ps.dead * 8);
  const view = new DataView(out.buffer);
  let off = 0;
  for (const pk of ps.packs) {
    if (pk.liveCount === pk.seqs.length) continue;
    for (let i = 0; i < pk.seqs.length; i++) {
      if (pk.live[i] === 1) continue;
      view.setFloat64(off, pk.seqs[i]);
      off += 8;
    }
  }
  if (off !== out.length) throw new Error(`tombstone count ${ps.dead} does not match the packs (${off / 8})`);
  return out;
}

function decodeSeqs(value: Uint8Array): number[] {
  if (value.length % 8 !== 0) throw new Error("tombstone list length is not a multiple of 8");
  const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
  const out: number[] = [];
  for (let off = 0; off < value.length; off += 8) out.push(view.getFloat64(off));
  return out;
}
