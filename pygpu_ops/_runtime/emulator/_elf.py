"""Static shared memory of each kernel, from the ELF object file of a module.

``__shared__`` is ``static thread_local`` in the emulator, so shared variables are thread-local
(TLS) symbols, with their sizes, in the object file g++ makes of a module. The module is compiled
with ``-ffunction-sections -fdata-sections``: every function has its own text section and every
variable its own ``.tbss`` section (whose alignment is the variable's). The relocations of a
function's section name the TLS variables its code uses and the functions it calls; a kernel's
static shared memory is every variable reachable from its section (its own ``__shared__``
variables, those of ``__device__`` helpers that were inlined into it, and those of helpers it
calls), laid out like ptxas lays out ``.shared`` variables: each at its alignment.

:func:`function_shared_sizes` runs on the object file at build time (the result is stored next to
the library); :func:`symbol_names_at` maps the kernels' addresses in the loaded library to their
symbol names."""

import struct

__all__ = ["read_elf", "function_shared_sizes", "symbol_names_at"]

_SHT_SYMTAB, _SHT_RELA = 2, 4
_SHF_EXECINSTR, _SHF_TLS = 0x4, 0x400
_STT_FUNC, _STT_SECTION, _STT_TLS = 2, 3, 6


class ElfSymbol:
    __slots__ = ("name", "value", "size", "type", "shndx")

    def __init__(self, name, value, size, type_, shndx):
        self.name, self.value, self.size, self.type, self.shndx = name, value, size, type_, shndx


class Section:
    __slots__ = ("name", "type", "flags", "offset", "size", "link", "info", "align", "entsize")

    def __init__(self, name, type_, flags, offset, size, link, info, align, entsize):
        self.name, self.type, self.flags, self.offset, self.size = name, type_, flags, offset, size
        self.link, self.info, self.align, self.entsize = link, info, align, entsize


def _cstring(data, off):
    return data[off:data.index(b"\0", off)].decode("ascii", "replace")


def read_elf(path):
    """``(data, sections, symbols)`` of a 64-bit little-endian ELF file (``symbols``: those of
    .symtab, in table order). Raises ValueError for anything else."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = raw[shstrndx][4]
    sections = [Section(_cstring(data, strtab + r[0]), r[1], r[2], r[4], r[5], r[6], r[7], r[8],
                        r[9]) for r in raw]
    symbols = []
    for sec in sections:
        if sec.type != _SHT_SYMTAB:
            continue
        stroff = sections[sec.link].offset
        n = sec.size // 24
        for st_name, st_info, _other, shndx, value, size in struct.iter_unpack(
                "<IBBHQQ", data[sec.offset:sec.offset + 24 * n]):
            symbols.append(ElfSymbol(_cstring(data, stroff + st_name), value, size, st_info & 0xF,
                                     shndx))
        break
    if not symbols:
        raise ValueError(f"{path}: no .symtab (stripped?)")
    return data, sections, symbols


def _layout(variables, sections):
    """Bytes of shared memory for ``variables`` (symbols), each placed at its alignment, the most
    aligned first (so padding only appears where ptxas would need it too)."""
    def align(v):
        a = sections[v.shndx].align if 0 < v.shndx < len(sections) else 1
        return max(1, min(a, 16))
    offset = 0
    for v in sorted(variables, key=lambda v: (-align(v), v.name)):
        a = align(v)
        offset = (offset + a - 1) // a * a + v.size
    return offset


def function_shared_sizes(obj_path):
    """Maps the name of every function of the object file that uses static shared memory
    (itself or through the functions it calls) to its size in bytes."""
    data, sections, symbols = read_elf(obj_path)
    tls_in = {}      # section index -> TLS variables defined there
    funcs_in = {}    # text section index -> function names defined there
    for s in symbols:
        if not 0 < s.shndx < len(sections):
            continue
        if s.type == _STT_TLS:
            if "pygpuemu_" not in s.name:  # the module's TLS anchor is no shared variable
                tls_in.setdefault(s.shndx, []).append(s)
        elif s.type == _STT_FUNC and s.name:
            funcs_in.setdefault(s.shndx, []).append(s.name)
    uses = {}        # text section -> TLS variables its relocations name
    calls = {}       # text section -> text sections its relocations name
    for rel in sections:
        if rel.type != _SHT_RELA or not sections[rel.info].flags & _SHF_EXECINSTR:
            continue
        text = rel.info
        n = rel.size // 24
        for _off, info, _addend in struct.iter_unpack("<QQq",
                                                      data[rel.offset:rel.offset + 24 * n]):
            sym = symbols[info >> 32]
            target = sym.shndx
            if not 0 < target < len(sections):
                continue  # undefined (the runtime, libc) or absolute
            if sym.type == _STT_TLS:
                if "pygpuemu_" not in sym.name:
                    uses.setdefault(text, set()).add(sym)
            elif sections[target].flags & _SHF_TLS:  # section symbol of a .tbss/.tdata section
                uses.setdefault(text, set()).update(tls_in.get(target, ()))
            elif sections[target].flags & _SHF_EXECINSTR and target != text:
                calls.setdefault(text, set()).add(target)
    sizes = {}
    for text, names in funcs_in.items():
        seen, todo, variables = {text}, [text], set()
        while todo:
            t = todo.pop()
            variables |= uses.get(t, set())
            for c in calls.get(t, ()):
                if c not in seen:
                    seen.add(c)
                    todo.append(c)
        if variables:
            b = _layout(variables, sections)
            for name in names:
                sizes[name] = b
    return sizes


def symbol_names_at(so_path, addresses, anchor_name, anchor_address):
    """Maps each ``key -> runtime address`` of ``addresses`` to the names of the functions at
    that address in the loaded library ``so_path`` (several when identical code was folded).
    ``anchor_name``/``anchor_address``: an exported function and where it is loaded."""
    _data, _sections, symbols = read_elf(so_path)
    anchor = [s for s in symbols if s.name == anchor_name]
    if not anchor:
        raise ValueError(f"{so_path}: symbol {anchor_name!r} not found")
    base = anchor_address - anchor[0].value
    at = {}
    for s in symbols:
        if s.type == _STT_FUNC and s.name:
            at.setdefault(s.value, []).append(s.name)
    out = {}
    for key, address in addresses.items():
        names = at.get(address - base)
        if not names:
            raise ValueError(f"{so_path}: no function symbol at the address of kernel {key!r}")
        out[key] = names
    return out
