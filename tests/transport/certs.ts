/**
 * Test certificates made with `openssl` at test time in a temporary directory: a CA, a server certificate
 * (CN=localhost, SAN IP:127.0.0.1 and DNS:localhost) and client certificates. ECDSA P-256 keys keep it fast.
 * All are X.509 v3: rustls refuses v1 certificates.
 *
 * @module
 */

/** Paths of the generated files (PEM) and a cleanup. */
export interface TestPki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  /** Client certificate with CN "device-42", signed by the CA. */
  clientCert: string;
  clientKey: string;
  /** Client certificate whose subject has two CNs, "device-7" then "admin", signed by the CA. */
  twoCnClientCert: string;
  twoCnClientKey: string;
  /** A second CA and a server / client certificate it signed, for "wrong CA" and reload cases. */
  otherCaCert: string;
  otherServerCert: string;
  otherServerKey: string;
  otherClientCert: string;
  otherClientKey: string;
  /** Reads a generated file as text. */
  read(path: string): string;
  /** Removes the directory. */
  remove(): Promise<void>;
}

let shared: Promise<TestPki> | undefined;

/**
 * One PKI per test process, made on first use and removed when the process ends (the `unload` event
 * also fires after `deno test`, and when only some tests are selected with --filter).
 */
export function sharedPki(): Promise<TestPki> {
  shared ??= makePki().then((pki) => {
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(pki.dir, { recursive: true });
      } catch {
        // already removed
      }
    });
    return pki;
  });
  return shared;
}

/** The CN of {@link TestPki.clientCert}. */
export const CLIENT_CN = "device-42";

async function openssl(dir: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd: dir, stdout: "piped", stderr: "piped" })
    .output();
  if (out.code !== 0) {
    throw new Error(
      `openssl ${args.join(" ")} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
}

async function makeCa(dir: string, name: string, cn: string): Promise<void> {
  await openssl(dir, [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.crt`,
    "-days",
    "2",
    "-subj",
    `/CN=${cn}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
}

async function makeLeaf(dir: string, ca: string, name: string, cn: string, ext: string): Promise<void> {
  await openssl(dir, [
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
    "-subj",
    `/CN=${cn}`,
  ]);
  await Deno.writeTextFile(`${dir}/${name}.ext`, ext);
  await openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    `${ca}.crt`,
    "-CAkey",
    `${ca}.key`,
    // A serial of its own: with -CAcreateserial, two leaves of one CA signed at once (as makePki does) raced
    // on the CA's .srl file ("Unable to load number from other-ca.srl").
    "-set_serial",
    `0x${
      Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("")
    }`,
    "-out",
    `${name}.crt`,
    "-days",
    "2",
    "-extfile",
    `${name}.ext`,
  ]);
}

const SERVER_EXT = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n" +
  "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
const CLIENT_EXT = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n";

/** Generates the test PKI in a new temporary directory. */
export async function makePki(): Promise<TestPki> {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-tls-test-" });
  try {
    await Promise.all([makeCa(dir, "ca", "Test CA"), makeCa(dir, "other-ca", "Other CA")]);
    await Promise.all([
      makeLeaf(dir, "ca", "server", "localhost", SERVER_EXT),
      makeLeaf(dir, "ca", "client", CLIENT_CN, CLIENT_EXT),
      makeLeaf(dir, "ca", "two-cn-client", "device-7/CN=admin", CLIENT_EXT),
      makeLeaf(dir, "other-ca", "other-server", "localhost", SERVER_EXT),
      makeLeaf(dir, "other-ca", "other-client", "intruder", CLIENT_EXT),
    ]);
  } catch (err) {
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
  return {
    dir,
    caCert: `${dir}/ca.crt`,
    serverCert: `${dir}/server.crt`,
    serverKey: `${dir}/server.key`,
    clientCert: `${dir}/client.crt`,
    clientKey: `${dir}/client.key`,
    twoCnClientCert: `${dir}/two-cn-client.crt`,
    twoCnClientKey: `${dir}/two-cn-client.key`,
    otherCaCert: `${dir}/other-ca.crt`,
    otherServerCert: `${dir}/other-server.crt`,
    otherServerKey: `${dir}/other-server.key`,
    otherClientCert: `${dir}/other-client.crt`,
    otherClientKey: `${dir}/other-client.key`,
    read: (path) => Deno.readTextFileSync(path),
    remove: () => Deno.remove(dir, { recursive: true }),
  };
}
