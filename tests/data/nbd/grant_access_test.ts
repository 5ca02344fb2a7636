/** grantAccess(): what a client certificate's grants let it do with one volume (pure). */
import { clientAccess, grantAccess, type VolumeGrant } from "../../../data/nbd/client_tls.ts";
import { assert, assertEquals } from "../../_assert.ts";

const A = "0f1e2d3c-4b5a-4968-8776-655443322110";
const B = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f00112233";

Deno.test("grantAccess(): names, '*', read-only and bound incarnations", () => {
  const table: [VolumeGrant[], string, string | undefined, string][] = [
    [[{ volume: "db", readOnly: false }], "db", A, "rw"],
    [[{ volume: "db", readOnly: true }], "db", A, "ro"],
    [[{ volume: "db", readOnly: false }], "logs", A, "hidden"],
    [[{ volume: "*", readOnly: true }], "logs", A, "ro"],
    // A read-write grant of the name wins over a read-only "*".
    [[{ volume: "*", readOnly: true }, { volume: "db", readOnly: false }], "db", A, "rw"],
    [[{ volume: "db", readOnly: false, uuid: A }], "db", A, "rw"],
    [[{ volume: "db", readOnly: false, uuid: A }], "db", B, "refused"],
    // Bound elsewhere, but "*:ro" still lets it read the new volume.
    [[{ volume: "db", readOnly: false, uuid: A }, { volume: "*", readOnly: true }], "db", B, "ro"],
    [[], "db", A, "hidden"],
  ];
  for (const [grants, name, uuid, want] of table) {
    const a = grantAccess(grants, { name, uuid });
    const got = a.ok ? (a.readOnly ? "ro" : "rw") : a.reason ? "refused" : "hidden";
    assertEquals(got, want, `${JSON.stringify(grants)} on ${name} ${uuid}`);
  }
  const refused = grantAccess([{ volume: "db", readOnly: false, uuid: A }], {
    name: "db",
    uuid: B,
  });
  assert(!refused.ok && refused.reason?.includes(`uuid ${A}`) && refused.reason.includes(B));
});

Deno.test("clientAccess(): admins and nodes open everything, nbd-clients what they were granted", () => {
  assertEquals(clientAccess({ role: "admin", name: "a", grants: [] }), undefined);
  assertEquals(clientAccess({ role: "node", name: "n2", grants: [] }), undefined);
  const c = clientAccess({
    role: "nbd-client",
    name: "c",
    grants: [{ volume: "db", readOnly: true }],
  });
  assertEquals(c?.({ name: "db", uuid: A }), { ok: true, readOnly: true });
  assertEquals(c?.({ name: "x", uuid: A }), { ok: false });
});
