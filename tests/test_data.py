"""Structure parsing and data acquisition; every structure here is written by the tests."""

import gzip
import http.server
import logging
import socket
import threading

import gemmi
import numpy as np
import pytest

from nanoaf2_jax.data.download import REFERENCE_PDB_IDS, DownloadError, ensure_pdb_files, validate_pdb_id
from nanoaf2_jax.data.structures import (
    StructureError,
    load_dataset,
    parse_structure,
    parse_structure_spec,
    split_chain_spec,
)
from nanoaf2_jax.geometry.residue_constants import AA_TO_IDX, UNK_IDX

# ---------------------------------------------------------------------------
# Hand-written PDB records
# ---------------------------------------------------------------------------

BACKBONE = ("N", "CA", "C", "O")


def atom(name, resname, resnum, xyz, chain="A", record="ATOM", altloc=" ", serial=1, occ=1.0):
    """One fixed-column PDB coordinate record."""
    element = name[0]
    field = f" {name:<3s}" if len(name) < 4 else name
    x, y, z = xyz
    return (
        f"{record:<6s}{serial:>5d} {field}{altloc}{resname:>3s} {chain}{resnum:>4d}    "
        f"{x:8.3f}{y:8.3f}{z:8.3f}{occ:6.2f}{20.0:6.2f}          {element:>2s}"
    )


def xyz_of(resnum, name, shift=0.0):
    """Distinct, exactly representable-at-3-decimals coordinates per residue and atom."""
    k = BACKBONE.index(name) if name in BACKBONE else 4
    return (3.8 * resnum + 0.125 * k + shift, 1.5 * k - 0.25 * resnum, 0.5 * resnum + shift)


def residue(resname, resnum, chain="A", atoms=BACKBONE, shift=0.0, **kw):
    return [atom(a, resname, resnum, xyz_of(resnum, a, shift), chain=chain, **kw) for a in atoms]


def chain_lines(resnames, chain="A", start=1, shift=0.0):
    lines = []
    for i, resname in enumerate(resnames):
        lines += residue(resname, start + i, chain=chain, shift=shift)
    return lines


def write(path, lines):
    path.write_text("\n".join(lines + ["END"]) + "\n")
    return path


def expected_ca(resnums, shift=0.0):
    return np.array([xyz_of(r, "CA", shift) for r in resnums], dtype=np.float32)


def codes(letters):
    return [AA_TO_IDX[c] for c in letters]


WATER = [atom("O", "HOH", 101, (9.0, 9.0, 9.0), record="HETATM")]
# A calcium ion named CA and a ligand with atoms named N, CA, C: must not become a residue.
LIGANDS = [
    atom("CA", " CA", 201, (7.0, 7.0, 7.0), record="HETATM"),
    *residue("LIG", 202, record="HETATM", shift=50.0, atoms=("N", "CA", "C")),
]


@pytest.fixture
def five_residue_pdb(tmp_path):
    """Chain A: MKTAY, residues 1-5, followed by a water and ligands."""
    return write(tmp_path / "prot.pdb", chain_lines(["MET", "LYS", "THR", "ALA", "TYR"])
                 + ["TER"] + WATER + LIGANDS)


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def test_pdb_parses_backbone(five_residue_pdb):
    p = parse_structure(five_residue_pdb)
    assert p.name == "prot" and p.chain == "A" and p.length == 5
    assert p.sequence.dtype == np.int32 and p.residue_index.dtype == np.int32
    assert p.sequence.tolist() == codes("MKTAY")
    assert p.residue_index.tolist() == [1, 2, 3, 4, 5]
    for arr in (p.coords_N, p.coords_CA, p.coords_C):
        assert arr.dtype == np.float32 and arr.shape == (5, 3)
    np.testing.assert_array_equal(p.coords_CA, expected_ca(range(1, 6)))
    np.testing.assert_array_equal(p.coords_N[2], np.float32(xyz_of(3, "N")))
    np.testing.assert_array_equal(p.coords_C[4], np.float32(xyz_of(5, "C")))


def test_pdb_mmcif_and_gzip_agree(five_residue_pdb, tmp_path):
    st = gemmi.read_structure(str(five_residue_pdb))
    st.setup_entities()
    cif_text = st.make_mmcif_document().as_string()
    pdb_bytes = five_residue_pdb.read_bytes()
    files = {
        "a.ent": pdb_bytes,
        "b.cif": cif_text.encode(),
        "c.mmcif": cif_text.encode(),
        "d.pdb.gz": gzip.compress(pdb_bytes),
        "e.cif.gz": gzip.compress(cif_text.encode()),
    }
    ref = parse_structure(five_residue_pdb)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        p = parse_structure(tmp_path / name)
        assert p.name == name.split(".")[0], name
        assert p.chain == "A", name
        np.testing.assert_array_equal(p.sequence, ref.sequence)
        np.testing.assert_array_equal(p.residue_index, ref.residue_index)
        for field in ("coords_N", "coords_CA", "coords_C"):
            np.testing.assert_array_equal(getattr(p, field), getattr(ref, field), err_msg=name)


def test_chain_selection(tmp_path, caplog):
    path = write(tmp_path / "two.pdb", chain_lines(["GLY", "ALA", "SER"], chain="A")
                 + ["TER"] + chain_lines(["TRP", "TRP", "LEU", "VAL"], chain="B", start=10))
    with caplog.at_level("INFO"):
        assert parse_structure(path).sequence.tolist() == codes("GAS")
    assert "two.pdb: 2 chains (A, B); using chain A" in caplog.text  # the choice is reported
    b = parse_structure(path, chain="B")
    assert b.chain == "B" and b.sequence.tolist() == codes("WWLV")
    assert b.residue_index.tolist() == [10, 11, 12, 13]
    assert parse_structure_spec(f"{path}:B").chain == "B"
    with pytest.raises(StructureError, match=r"two\.pdb.*chain 'C' not found.*A, B"):
        parse_structure(path, chain="C")


def test_first_usable_chain_is_default(tmp_path):
    """A chain of only HETATM (or CA-only residues) is skipped; chains are never merged."""
    ca_only = [atom("CA", "ALA", i, xyz_of(i, "CA"), chain="A") for i in range(1, 4)]
    path = write(tmp_path / "x.pdb", ca_only + ["TER"] + chain_lines(["CYS", "ASP"], chain="B"))
    p = parse_structure(path)
    assert p.chain == "B" and p.sequence.tolist() == codes("CD")
    with pytest.raises(StructureError, match="chain 'A' has no ATOM residue"):
        parse_structure(path, chain="A")


def test_split_chain_spec():
    assert split_chain_spec("data/1UBQ.pdb:A") == ("data/1UBQ.pdb", "A")
    assert split_chain_spec("1UBQ:A") == ("1UBQ", "A")
    assert split_chain_spec("1UBQ:AB12") == ("1UBQ", "AB12")
    assert split_chain_spec("1UBQ.pdb") == ("1UBQ.pdb", None)
    assert split_chain_spec("odd:dir/1UBQ.pdb") == ("odd:dir/1UBQ.pdb", None)
    assert split_chain_spec("1UBQ:ABCDE") == ("1UBQ:ABCDE", None)
    assert split_chain_spec("1UBQ:") == ("1UBQ:", None)
    assert split_chain_spec(":A") == (":A", None)


def test_residue_missing_ca_is_dropped(tmp_path):
    lines = (residue("ALA", 1) + residue("GLY", 2, atoms=("N", "C", "O"))
             + residue("SER", 3) + residue("VAL", 4, atoms=("N", "CA", "C")))
    p = parse_structure(write(tmp_path / "gap.pdb", lines))
    assert p.sequence.tolist() == codes("ASV")  # O is not required, CA is
    assert p.residue_index.tolist() == [1, 3, 4]
    np.testing.assert_array_equal(p.coords_CA, expected_ca([1, 3, 4]))


def test_nonstandard_residues(tmp_path):
    """Unknown ATOM residues are coded 24; HETATM residues (here MSE) are dropped."""
    lines = (residue("ALA", 1) + residue("UNK", 2) + residue("XYZ", 3)
             + residue("MSE", 4, record="HETATM") + residue("GLY", 5))
    p = parse_structure(write(tmp_path / "nonstd.pdb", lines))
    assert p.sequence.tolist() == [AA_TO_IDX["A"], UNK_IDX, UNK_IDX, AA_TO_IDX["G"]]
    assert p.residue_index.tolist() == [1, 2, 3, 5]


def test_alternate_locations_keep_a(tmp_path):
    lines = residue("ALA", 1) + [
        atom("N", "LEU", 2, xyz_of(2, "N")),
        atom("CA", "LEU", 2, xyz_of(2, "CA", shift=5.0), altloc="B", occ=0.5),
        atom("CA", "LEU", 2, xyz_of(2, "CA"), altloc="A", occ=0.5),
        atom("C", "LEU", 2, xyz_of(2, "C")),
        # Only a B conformer for CA: the reference drops the residue, so do we.
        atom("N", "ILE", 3, xyz_of(3, "N")),
        atom("CA", "ILE", 3, xyz_of(3, "CA"), altloc="B", occ=0.5),
        atom("C", "ILE", 3, xyz_of(3, "C")),
    ]
    p = parse_structure(write(tmp_path / "alt.pdb", lines))
    assert p.sequence.tolist() == codes("AL")
    np.testing.assert_array_equal(p.coords_CA, expected_ca([1, 2]))


def test_microheterogeneity_keeps_first_conformer(tmp_path):
    """Two residue types at one position (altloc A PHE, altloc B TYR): one residue, PHE."""
    lines = residue("ALA", 1)
    for name in ("N", "CA", "C"):
        lines.append(atom(name, "PHE", 2, xyz_of(2, name), altloc="A", occ=0.5))
        lines.append(atom(name, "TYR", 2, xyz_of(2, name, shift=5.0), altloc="B", occ=0.5))
    p = parse_structure(write(tmp_path / "micro.pdb", lines))
    assert p.sequence.tolist() == codes("AF")
    np.testing.assert_array_equal(p.coords_CA, expected_ca([1, 2]))


def test_multiple_models_first_only(tmp_path):
    lines = (["MODEL        1"] + chain_lines(["ALA", "GLY"]) + ["ENDMDL", "MODEL        2"]
             + chain_lines(["ALA", "GLY", "SER"], shift=3.0) + ["ENDMDL"])
    p = parse_structure(write(tmp_path / "nmr.pdb", lines))
    assert p.sequence.tolist() == codes("AG")
    np.testing.assert_array_equal(p.coords_CA, expected_ca([1, 2]))


def test_hetatm_only_is_not_a_protein(tmp_path):
    path = write(tmp_path / "ligand.pdb", WATER + LIGANDS)
    with pytest.raises(StructureError, match=r"ligand\.pdb: no protein chain"):
        parse_structure(path)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("missing.pdb", None, "file not found"),
        ("empty.pdb", "", "file is empty"),
        ("garbage.pdb", "this is not a structure\njust words\n", "no atoms"),
        ("garbage.cif", "this is not a structure\n", "not a readable Mmcif structure"),
        ("short.pdb", "ATOM  oops\n", "not a readable Pdb structure"),
        ("notes.txt", "ATOM\n", "unrecognised extension"),
    ],
)
def test_bad_files_raise_structure_error(tmp_path, name, content, reason):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(StructureError, match=reason) as info:
        parse_structure(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------


def test_load_dataset_skips_bad_file_with_warning(five_residue_pdb, tmp_path, caplog):
    (tmp_path / "bad.pdb").write_text("garbage\n")
    (tmp_path / "README.txt").write_text("not a structure, not even looked at\n")
    write(tmp_path / "a_short.pdb", chain_lines(["ALA", "GLY"]))
    with caplog.at_level(logging.WARNING):
        proteins = load_dataset(tmp_path, min_length=3)
    assert [p.name for p in proteins] == ["prot"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "bad.pdb" in warnings[0]
    assert [p.name for p in load_dataset(tmp_path)] == ["a_short", "prot"]  # sorted by name
    assert [p.name for p in load_dataset(tmp_path, max_length=2)] == ["a_short"]


def test_load_dataset_empty_or_unusable_dir(tmp_path):
    with pytest.raises(StructureError, match=str(tmp_path)):
        load_dataset(tmp_path)
    write(tmp_path / "tiny.pdb", chain_lines(["ALA"]))
    with pytest.raises(StructureError, match="1 outside the length range"):
        load_dataset(tmp_path, min_length=20, max_length=200)
    with pytest.raises(StructureError, match="not a directory"):
        load_dataset(tmp_path / "nope")


# ---------------------------------------------------------------------------
# Acquisition, against a local HTTP server
# ---------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    """Serves `routes` {path: (status, body, declared_length or None)}; logs request paths."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = {}
        self.requests = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        status, body, declared = self.server.routes.get(self.path, (404, b"not found", None))
        self.send_response(status)
        self.send_header("Content-Length", str(declared if declared is not None else len(body)))
        self.end_headers()
        self.wfile.write(body)  # HTTP/1.0: the connection closes after this

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")  # never route 127.0.0.1 through a configured proxy
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.fixture
def pdb_body(five_residue_pdb):
    return five_residue_pdb.read_bytes()


def fetch(ids, data_dir, srv, **kw):
    return ensure_pdb_files(ids, data_dir, base_url=srv.url, timeout=5, retries=1, backoff=0, **kw)


def test_download_success_and_no_refetch(server, pdb_body, tmp_path):
    data_dir = tmp_path / "pdb"
    server.routes["/1UBQ.pdb"] = (200, pdb_body, None)
    paths = fetch(["1ubq"], data_dir, server)
    assert paths == [data_dir / "1UBQ.pdb"]
    assert paths[0].read_bytes() == pdb_body
    assert parse_structure(paths[0]).length == 5
    assert fetch(["1UBQ"], data_dir, server) == paths
    assert server.requests == ["/1UBQ.pdb"]
    assert sorted(p.name for p in data_dir.iterdir()) == ["1UBQ.pdb"]  # no temp files left


def test_present_file_in_any_format_is_not_fetched(server, pdb_body, tmp_path):
    (tmp_path / "1CRN.cif.gz").write_bytes(b"whatever")
    assert fetch(["1CRN"], tmp_path, server) == [tmp_path / "1CRN.cif.gz"]
    assert fetch(["1CRN"], tmp_path, server, offline=True) == [tmp_path / "1CRN.cif.gz"]
    assert server.requests == []


def test_download_404_names_id_and_url(server, tmp_path):
    with pytest.raises(DownloadError, match=r"9ZZZ.*/9ZZZ\.pdb.*404") as info:
        fetch(["9ZZZ"], tmp_path, server)
    assert server.url in str(info.value)
    assert server.requests == ["/9ZZZ.pdb"]  # not retried
    assert list(tmp_path.iterdir()) == []


def test_truncated_download_leaves_nothing(server, pdb_body, tmp_path):
    """Content-Length larger than the body, then the server closes the connection."""
    data_dir = tmp_path / "pdb"
    server.routes["/1UBQ.pdb"] = (200, pdb_body[: len(pdb_body) // 2], len(pdb_body))
    with pytest.raises(DownloadError, match="1UBQ"):
        fetch(["1UBQ"], data_dir, server)
    assert server.requests == ["/1UBQ.pdb"] * 2  # first try + 1 retry
    assert list(data_dir.iterdir()) == []


def test_unparsable_download_leaves_nothing(server, tmp_path):
    server.routes["/1UBQ.pdb"] = (200, b"<html>maintenance</html>\n", None)
    with pytest.raises(DownloadError, match="did not return a usable PDB file"):
        fetch(["1UBQ"], tmp_path, server)
    assert list(tmp_path.iterdir()) == []


def test_no_network_tells_what_to_download(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    with pytest.raises(DownloadError) as info:
        ensure_pdb_files(["1UBQ", "1CRN"], tmp_path, base_url=base, timeout=5, retries=0)
    message = str(info.value)
    assert f"{base}/1UBQ.pdb" in message and f"{base}/1CRN.pdb" in message
    assert str(tmp_path) in message and "--data-dir" in message
    with pytest.raises(DownloadError, match="offline"):
        ensure_pdb_files(["1UBQ"], tmp_path, base_url=base, offline=True)


@pytest.mark.parametrize("bad", ["../x", "1UB", "1UB!", "1UBQ5", "", "1ÜBQ", None])
def test_invalid_pdb_ids_rejected(bad, tmp_path):
    with pytest.raises(ValueError, match="invalid PDB ID"):
        validate_pdb_id(bad)
    with pytest.raises(ValueError, match="invalid PDB ID"):
        ensure_pdb_files(["1UBQ", bad], tmp_path, base_url="http://127.0.0.1:9", offline=True)


def test_reference_ids_are_valid():
    assert [validate_pdb_id(i) for i in REFERENCE_PDB_IDS] == REFERENCE_PDB_IDS


def test_a_corrupt_or_truncated_gzip_stream_is_named_as_such(five_residue_pdb, tmp_path):
    from nanoaf2_jax.data.prepare import prepare

    data = gzip.compress(five_residue_pdb.read_bytes())
    damaged = bytearray(data)
    damaged[len(data) // 2:len(data) // 2 + 8] = bytes(8)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "BAD.pdb.gz").write_bytes(bytes(damaged))
    (tmp_path / "in" / "CUT.pdb.gz").write_bytes(data[: len(data) // 2])
    for name in ("BAD", "CUT"):
        with pytest.raises(StructureError, match=f"{name}.pdb.gz: corrupt gzip stream"):
            parse_structure(tmp_path / "in" / f"{name}.pdb.gz")
    (tmp_path / "in" / "OK.pdb.gz").write_bytes(data)
    assert parse_structure(tmp_path / "in" / "OK.pdb.gz").length == 5
    prepare([tmp_path / "in"], tmp_path / "cache")
    import json

    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    text = json.dumps(manifest)
    assert text.count("corrupt gzip stream") == 2 and "contains no atoms" not in text
