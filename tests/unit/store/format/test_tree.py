"""Tree blobs: restic's node JSON, byte for byte, for any name and any metadata."""

from __future__ import annotations

import base64
import json
import stat
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.errors import FormatError
from coffer.store.format import tree
from coffer.store.format.tree import Node
from coffer.util import gotime

NS = 1_000_000_000
U32 = (1 << 32) - 1
U64 = (1 << 64) - 1

ids = st.binary(min_size=32, max_size=32)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # JSON cannot carry lone surrogates
special_names = st.sampled_from([
    b"tab\tname.txt", b'we"ird\\name.txt', b"ctl\x01\x1bname", b"bad\xff\xfename", b"<>&.txt",
    "line\u2028sep".encode(), "été😀".encode(), b"\\x41", b"a\nb", b"\x00", b".", b"..", b"\xed\xa0\x80",
    b"\xc0\x80", b"\xe2\x82", b"\x7f", "\u00a0\u0085\ue000".encode(),
])
names = st.one_of(
    st.binary(max_size=24), st.text(max_size=12).map(lambda s: s.encode("utf-8", "surrogatepass")), special_names
)
times = st.one_of(
    st.builds(
        gotime.format_ns,
        st.integers(-62135596800 * NS, 253402300799 * NS),
        st.integers(-1439, 1439).map(lambda m: m * 60),
    ),
    texts.filter(bool),  # tree decoding keeps whatever string is there
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(texts, c, max_size=3),
    max_leaves=8,
)
nodes = st.builds(
    Node,
    name=names,
    type=st.sampled_from(tree.NODE_TYPES),
    mode=st.integers(0, U32),
    mtime=times,
    atime=times,
    ctime=times,
    uid=st.integers(0, U32),
    gid=st.integers(0, U32),
    user=texts,
    group=texts,
    inode=st.integers(0, U64),
    device_id=st.integers(0, U64),
    size=st.integers(0, U64),
    links=st.integers(0, U64),
    linktarget=st.one_of(st.binary(max_size=20), texts.map(str.encode), st.just(b"..\xff/x")),
    xattrs=st.none() | st.lists(st.tuples(texts, st.binary(max_size=20)), min_size=1, max_size=3),
    generic_attributes=st.none() | st.dictionaries(texts, json_values, min_size=1, max_size=3),
    device=st.integers(0, U64),
    content=st.none() | st.lists(ids, max_size=3),
    subtree=st.none() | ids,
    error=texts,
    extra=st.just({}) | st.dictionaries(st.sampled_from(["future_field", "x"]), json_values, min_size=1),
)
sorted_nodes = st.lists(nodes, unique_by=lambda n: n.name, max_size=4).map(lambda ns: sorted(ns, key=lambda n: n.name))


@settings(max_examples=80)
@given(sorted_nodes)
def test_round_trip(ns: list[Node]) -> None:
    raw = tree.encode_tree(ns)
    assert raw.startswith(b'{"nodes":[') and raw.endswith(b"]}\n") and raw.count(b"\n") == 1
    raw.decode("utf-8")  # always valid UTF-8, whatever the names and targets were
    back = tree.decode_tree(raw)
    assert back == ns
    assert tree.encode_tree(back) == raw


@settings(max_examples=80)
@given(nodes)
def test_node_json_is_what_json_parses(n: Node) -> None:
    obj = json.loads(n.to_json())
    assert obj["name"] == tree.goquote.quote(n.name)
    assert obj["content"] == (None if n.content is None else [c.hex() for c in n.content])
    if n.linktarget:
        assert obj["linktarget"] == n.linktarget.decode("utf-8", "replace") or "linktarget_raw" in obj


@settings(max_examples=40)
@given(st.lists(nodes, max_size=4))
def test_encode_requires_sorted_unique(ns: list[Node]) -> None:
    names_ = [n.name for n in ns]
    if all(a < b for a, b in zip(names_, names_[1:])):
        assert tree.decode_tree(tree.encode_tree(ns)) == ns
    else:
        with pytest.raises(FormatError):
            tree.encode_tree(ns)


def test_duplicate_names_refused() -> None:
    with pytest.raises(FormatError):
        tree.encode_tree([Node(name=b"a", type="file"), Node(name=b"a", type="dir")])
    with pytest.raises(FormatError):
        tree.encode_tree([Node(name=b"b", type="file"), Node(name=b"a", type="file")])


def test_sorted_by_raw_bytes() -> None:
    ns = [Node(name=b"B", type="file"), Node(name=b"a", type="file"), Node(name=b"\xc3\xa9", type="file")]
    tree.encode_tree(ns)  # 0x42 < 0x61 < 0xc3


# --- exact bytes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "json_name"),
    [
        (b"tab\tname.txt", rb'"tab\\tname.txt"'),
        (b'we"ird\\name.txt', rb'"we\\\"ird\\\\name.txt"'),
        (b"ctl\x01\x1bname", rb'"ctl\\x01\\x1bname"'),
        (b"bad\xff\xfename", rb'"bad\\xff\\xfename"'),
        (b"<>&", rb'"\u003c\u003e\u0026"'),
        ("line\u2028sep".encode(), rb'"line\\u2028sep"'),
        ("été".encode(), '"été"'.encode()),
    ],
)
def test_name_bytes(name: bytes, json_name: bytes) -> None:
    raw = tree.encode_tree([Node(name=name, type="file", content=[])])
    assert raw.startswith(b'{"nodes":[{"name":' + json_name + b',"type":"file",')
    assert tree.decode_tree(raw)[0].name == name


T = "2024-01-02T03:04:05.123456789+01:00"
RESTIC_014_TREE = (
    '{"nodes":['
    '{"name":"empty","type":"file","mode":420,"mtime":"%(t)s","atime":"%(t)s","ctime":"2024-01-02T03:04:05.5+01:00",'
    '"uid":1000,"gid":1000,"user":"u","group":"g","inode":123,"device_id":2049,"links":1,"content":[]},'
    '{"name":"file","type":"file","mode":416,"mtime":"%(t)s","atime":"%(t)s","ctime":"%(t)s",'
    '"uid":0,"gid":0,"inode":7,"device_id":2049,"size":3,"links":2,'
    '"extended_attributes":[{"name":"user.x","value":"AP8="}],"content":["%(a)s","%(b)s"]},'
    '{"name":"link","type":"symlink","mode":134218239,"mtime":"%(t)s","atime":"%(t)s","ctime":"%(t)s",'
    '"uid":0,"gid":0,"inode":8,"device_id":2049,"links":1,"linktarget":"../x \\u003cy\\u003e","content":null},'
    '{"name":"sub","type":"dir","mode":2147484141,"mtime":"%(t)s","atime":"%(t)s","ctime":"%(t)s",'
    '"uid":0,"gid":0,"user":"root","group":"root","inode":5,"device_id":2049,"content":null,"subtree":"%(a)s"},'
    '{"name":"tty","type":"chardev","mode":69206416,"mtime":"%(t)s","atime":"%(t)s","ctime":"%(t)s",'
    '"uid":0,"gid":5,"inode":9,"device_id":6,"links":1,"device":1024,"content":null}'
    ']}\n' % {"t": T, "a": "aa" * 32, "b": "bb" * 32}
).encode()


def test_restic_014_style_tree_reencodes_identically() -> None:
    ns = tree.decode_tree(RESTIC_014_TREE)
    assert [n.name for n in ns] == [b"empty", b"file", b"link", b"sub", b"tty"]
    assert ns[0].content == [] and ns[0].size == 0
    assert ns[1].xattrs == [("user.x", b"\x00\xff")]
    assert ns[2].linktarget == b"../x <y>" and ns[2].content is None
    assert ns[3].subtree == b"\xaa" * 32 and ns[3].mode == tree.GO_DIR | 0o755
    assert tree.encode_tree(ns) == RESTIC_014_TREE


def test_field_order_matches_go_struct() -> None:
    n = Node(
        name=b"n", type="file", mode=1, mtime=T, atime=T, ctime=T, uid=1, gid=1, user="u", group="g", inode=1,
        device_id=1, size=1, links=1, linktarget=b"t", xattrs=[("a", b"b")], generic_attributes={"k": 1},
        device=1, content=[b"\x01" * 32], subtree=b"\x02" * 32, error="e",
    )
    keys = [k for k, _ in json.loads(n.to_json(), object_pairs_hook=list)]
    assert keys == [
        "name", "type", "mode", "mtime", "atime", "ctime", "uid", "gid", "user", "group", "inode", "device_id",
        "size", "links", "linktarget", "extended_attributes", "generic_attributes", "device", "content",
        "subtree", "error",
    ]


def test_omitempty_rules() -> None:
    empty_file = json.loads(Node(name=b"e", type="file", content=[]).to_json())
    assert empty_file["content"] == [] and "size" not in empty_file and "mode" not in empty_file
    assert empty_file["uid"] == 0 and empty_file["gid"] == 0  # never omitted
    assert empty_file["mtime"] == "0001-01-01T00:00:00Z"
    d = Node(name=b"d", type="dir", subtree=b"\x01" * 32).to_json()
    assert d.endswith(',"content":null,"subtree":"' + "01" * 32 + '"}')


def test_invalid_utf8_link_target() -> None:
    """Go writes each invalid byte as the escape \\ufffd; newer restic adds linktarget_raw."""
    target = b"a\xffb\xe2\x82c"
    js = Node(name=b"l", type="symlink", linktarget=target).to_json()
    assert '"linktarget":"a\\ufffdb\\ufffd\\ufffdc"' in js
    assert '"linktarget_raw":"%s"' % base64.b64encode(target).decode() in js
    raw = tree.encode_tree([Node(name=b"l", type="symlink", linktarget=target)])
    assert tree.decode_tree(raw)[0].linktarget == target


def test_linktarget_raw_wins_in_either_order() -> None:
    raw_b64 = base64.b64encode(b"\xff").decode()
    for fields in ('"linktarget":"x","linktarget_raw":"%s"', '"linktarget_raw":"%s","linktarget":"x"'):
        doc = '{"nodes":[{"name":"l","type":"symlink",%s,"content":null}]}' % (fields % raw_b64)
        assert tree.decode_tree(doc.encode())[0].linktarget == b"\xff"


@pytest.mark.parametrize(
    ("s", "esc"),
    [("<>&", "\\u003c\\u003e\\u0026"), ("\u2028\u2029", "\\u2028\\u2029"), ("\b\f", "\\u0008\\u000c"),
     ("\x01\x1f", "\\u0001\\u001f"), ("\n\r\t", "\\n\\r\\t")],
)
def test_go_escaping_in_string_fields(s: str, esc: str) -> None:
    js = Node(name=b"n", type="file", user=s, group=s, error=s).to_json()
    assert js.count('"%s"' % esc) == 3


def test_surrogate_escaped_strings_encode_like_go() -> None:
    # A user name or xattr name read with surrogateescape (invalid UTF-8 on disk) must not crash
    # encoding; Go writes each invalid byte as \ufffd.
    n = Node(name=b"n", type="file", user="r\udcffot", xattrs=[("user.\udc80", b"v")])
    raw = tree.encode_tree([n])
    raw.decode("utf-8")
    back = tree.decode_tree(raw)[0]
    assert back.user == "r\ufffdot" and back.xattrs == [("user.\ufffd", b"v")]


def test_hostile_time_string_cannot_break_the_json() -> None:
    evil = b'"\\",\\"x\\":\\""'
    doc = b'{"nodes":[{"name":"n","type":"file","mtime":%s,"atime":%s,"ctime":%s,"content":[]}]}' % (evil, evil, evil)
    n = tree.decode_tree(doc)[0]
    assert tree.decode_tree(tree.encode_tree([n]))[0] == n


# --- hostile input --------------------------------------------------------------------------------


def _tree(**node: Any) -> bytes:
    n: dict[str, Any] = {"name": "n", "type": "file", "content": []}
    n.update(node)
    return json.dumps({"nodes": [{k: v for k, v in n.items() if v is not ...}]}).encode()


HOSTILE = [
    _tree(type="weird"), _tree(type=None), _tree(type=5), _tree(type=...), _tree(name=...), _tree(name=5),
    _tree(name="bad\\qescape"), _tree(name="trailing\\"), _tree(name="\\x4"), _tree(name="\\U00110000"),
    _tree(name="\\777"), _tree(name="\ud800"),
    _tree(uid=-1), _tree(uid=True), _tree(uid=1.5), _tree(uid="1"), _tree(mode=None), _tree(size=[1]),
    _tree(mtime=5), _tree(user=5), _tree(error={}),
    _tree(content="abc"), _tree(content=[5]), _tree(content=["aa"]), _tree(content=["zz" * 32]),
    _tree(subtree="zz"), _tree(subtree="aa" * 31), _tree(subtree=5),
    _tree(extended_attributes=[{"name": 1, "value": "AA=="}]), _tree(extended_attributes=[{"value": "AA=="}]),
    _tree(extended_attributes=[{"name": "a", "value": "%%"}]), _tree(extended_attributes=5),
    _tree(extended_attributes=["x"]),
    _tree(linktarget_raw="%%"), _tree(linktarget_raw=5), _tree(linktarget=5), _tree(linktarget="\ud800"),
    b'{"nodes":{}}', b'{"nodes":"x"}', b'{"nodes":[5]}', b'{"nodes":[[]]}', b"[]", b"null", b'"tree"', b"",
    b"\xff", b"{",
    _tree(inode=0).replace(b'"inode": 0', b'"inode": ' + b"1" * 1_000_000),
    _tree(inode=0).replace(b'"inode": 0', b'"inode": NaN'),
    _tree(inode=0).replace(b'"inode": 0', b'"inode": -Infinity'),
    _tree(inode=0).replace(b'"inode": 0', b'"inode": 1e999'),
    b'{"nodes":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"nodes":[{"name":"n","type":"dir","generic_attributes":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_001 + b"]}",
]


@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile(raw: bytes) -> None:
    with pytest.raises(FormatError):
        tree.decode_tree(raw)


def test_no_nodes_is_empty() -> None:
    assert tree.decode_tree(b"{}") == []
    assert tree.decode_tree(b'{"nodes":null}') == []
    assert tree.encode_tree([]) == b'{"nodes":[]}\n'


def test_unknown_fields_are_kept() -> None:
    z = b'"0001-01-01T00:00:00Z"'
    raw = b'{"nodes":[{"name":"n","type":"file","mtime":%s,"atime":%s,"ctime":%s,"uid":0,"gid":0,' % (z, z, z)
    raw += b'"content":[],"future":{"a":[1,"\\u003c"]}}]}\n'
    n = tree.decode_tree(raw)[0]
    assert n.extra == {"future": {"a": [1, "<"]}}
    assert tree.encode_tree([n]) == raw


field_values: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from([*tree.NODE_TYPES, "weird"]),
    "mode": st.integers(-1, U32), "uid": st.integers(-1, U32), "gid": st.integers(0, U32),
    "mtime": st.one_of(times, st.text(max_size=5)), "atime": times, "ctime": times,
    "user": st.text(max_size=6), "group": st.text(max_size=6), "error": st.text(max_size=6),
    "inode": st.integers(0, U64), "device_id": st.integers(0, U64), "size": st.integers(0, U64),
    "links": st.integers(0, U64), "device": st.integers(0, U64),
    "linktarget": st.text(max_size=8), "linktarget_raw": st.sampled_from(["", "/w==", "YWJj", "%"]),
    "extended_attributes": st.none() | st.lists(st.fixed_dictionaries(
        {"name": st.text(max_size=5), "value": st.sampled_from(["", "AA==", "/w==", None])}), max_size=2),
    "generic_attributes": st.none() | st.dictionaries(st.text(max_size=4), json_values, max_size=2),
    "content": st.none() | st.lists(st.sampled_from(["aa" * 32, "bb" * 32, "ab"]), max_size=2),
    "subtree": st.none() | st.sampled_from(["aa" * 32, "x"]),
    "future": json_values,
}
node_objs = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=8), st.sampled_from(["\\x41\\t", "\\q", "a\\\\b", "\\u00e9", "\\'"]))},
    optional={k: st.one_of(v, json_values) for k, v in field_values.items()},
)


@settings(max_examples=100)
@given(st.lists(st.one_of(node_objs, json_values), max_size=4))
def test_fuzz_decode_then_encode_is_stable(objs: list[Any]) -> None:
    """T47: only FormatError; what decodes re-encodes, and a second round trip changes nothing."""
    raw = json.dumps({"nodes": objs}).encode()
    try:
        ns = tree.decode_tree(raw)
    except FormatError:
        return
    ns = sorted({n.name: n for n in ns}.values(), key=lambda n: n.name)
    first = tree.encode_tree(ns)
    assert tree.encode_tree(tree.decode_tree(first)) == first


# --- modes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("st_mode", "go"),
    [
        (stat.S_IFDIR | 0o755, 2147484141),
        (stat.S_IFLNK | 0o777, 134218239),
        (stat.S_IFREG | stat.S_ISUID | 0o755, 8389101),
        (stat.S_IFDIR | stat.S_ISVTX | 0o777, 2148532735),
        (stat.S_IFREG | 0o640, 416),
        (stat.S_IFCHR | 0o620, tree.GO_DEVICE | tree.GO_CHAR_DEVICE | 0o620),
        (stat.S_IFBLK | 0o660, tree.GO_DEVICE | 0o660),
        (stat.S_IFIFO | 0o644, tree.GO_NAMED_PIPE | 0o644),
        (stat.S_IFSOCK | 0o755, tree.GO_SOCKET | 0o755),
        (stat.S_IFREG | stat.S_ISGID | 0o2755, tree.GO_SETGID | 0o755),
    ],
)
def test_go_mode_vectors(st_mode: int, go: int) -> None:
    assert tree.go_mode(st_mode) == go
    assert tree.unix_perm(go) == stat.S_IMODE(st_mode)


@given(
    st.sampled_from(
        [stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK]
    ),
    st.integers(0, 0o7777),
)
def test_mode_bits_round_trip(fmt: int, perm: int) -> None:
    go = tree.go_mode(fmt | perm)
    assert tree.unix_perm(go) == perm
    assert go & 0o777 == perm & 0o777
    assert tree.node_type_from_mode(fmt | perm) in tree.NODE_TYPES


def test_node_type_from_mode() -> None:
    assert tree.node_type_from_mode(stat.S_IFREG) == "file"
    assert tree.node_type_from_mode(stat.S_IFDIR) == "dir"
    assert tree.node_type_from_mode(stat.S_IFLNK) == "symlink"
    assert tree.node_type_from_mode(stat.S_IFBLK) == "dev"
    assert tree.node_type_from_mode(stat.S_IFCHR) == "chardev"
    assert tree.node_type_from_mode(stat.S_IFIFO) == "fifo"
    assert tree.node_type_from_mode(stat.S_IFSOCK) == "socket"
    assert tree.node_type_from_mode(0) == "irregular"


def test_display_name() -> None:
    assert Node(name=b"a\xffb", type="file").display_name == "a\udcffb"
