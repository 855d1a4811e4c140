"""Source handling: the few rewrites the CUDA dialect needs, kernel discovery
and generation of the registration glue appended after the kernel source.

Every rewrite keeps the number of lines, so g++ diagnostics point at the
original file and line (the prelude is pulled in with ``#include`` and
followed by a ``#line 1`` directive)."""

import re

__all__ = ["strip_comments", "rewrite", "find_extern_c_kernels", "find_launch_bounds",
           "make_translation_unit"]

_GLUE_FILE = "<pygpu_ops emulator glue>"


def strip_comments(src):
    """Replaces comments by spaces (newlines kept) so offsets stay valid.
    String and character literals are skipped over and kept."""
    out = []
    i, n = 0, len(src)
    start = 0
    while i < n:
        c = src[i]
        if c == "/" and i + 1 < n and src[i + 1] == "/":
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(src[start:i])
            out.append(" " * (j - i))
            i = start = j
        elif c == "/" and i + 1 < n and src[i + 1] == "*":
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(src[start:i])
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = start = j
        elif c == '"' or c == "'":
            j = i + 1
            while j < n and src[j] != c and src[j] != "\n":
                j += 2 if src[j] == "\\" else 1
            i = j + 1
        else:
            i += 1
    out.append(src[start:])
    return "".join(out)


_ATTR = r"(?:__align__\s*\(\s*[^()]*\)|alignas\s*\(\s*[^()]*\)|__attribute__\s*\(\([^()]*(?:\([^()]*\))?[^()]*\)\))"
_EXTERN_SHARED = re.compile(
    r"\bextern\s+(?:" + _ATTR + r"\s*)*__shared__\s+"
    r"(?P<body>(?:" + _ATTR + r"|[^;{}()\[\]])*?)"
    r"\b(?P<name>[A-Za-z_]\w*)\s*\[\s*\]\s*(?:" + _ATTR + r"\s*)*;")
_STATIC_SHARED = re.compile(r"\bstatic(\s+)__shared__\b|\b__shared__(\s+)static\b")
_ATTR_RE = re.compile(_ATTR)


def _keep_lines(old, new):
    return new + "\n" * old.count("\n")


def rewrite(src):
    """Rewrites ``extern __shared__ T name[];`` (dynamic shared memory) into a
    pointer to the emulator's dynamic shared memory window, and drops a
    redundant ``static`` next to ``__shared__``.  Only code outside comments
    is touched; line numbers are preserved."""
    scan = strip_comments(src)
    edits = []
    for m in _EXTERN_SHARED.finditer(scan):
        body = _ATTR_RE.sub(" ", m.group("body"))
        ctype = " ".join(body.split())
        if not ctype:
            continue
        name = m.group("name")
        new = (f"{ctype}* const {name} = reinterpret_cast<{ctype}*>(pygpuemu_dyn_smem());")
        edits.append((m.start(), m.end(), _keep_lines(m.group(0), new)))
    for m in _STATIC_SHARED.finditer(scan):
        edits.append((m.start(), m.end(), _keep_lines(m.group(0), "__shared__")))
    edits.sort()
    out, pos = [], 0
    for a, b, text in edits:
        if a < pos:
            continue
        out.append(src[pos:a])
        out.append(text)
        pos = b
    out.append(src[pos:])
    return "".join(out)


_QUAL = r"(?:__\w+__(?:\s*\([^()]*\))?\s+|static\s+|inline\s+)*"
_EXTERN_C_KERNEL = re.compile(
    r'\bextern\s+"C"\s+' + _QUAL + r"__global__\s+" + _QUAL + r"void\s+" + _QUAL +
    r"(?P<name>[A-Za-z_]\w*)\s*\(")


_EXTERN_C_BLOCK = re.compile(r'\bextern\s+"C"\s*\{')
_GLOBAL_KERNEL = re.compile(r"\b__global__\s+" + _QUAL + r"void\s+" + _QUAL +
                            r"(?P<name>[A-Za-z_]\w*)\s*\(")


def find_extern_c_kernels(src):
    """Names of the ``extern "C" __global__ void NAME(`` kernels in ``src``
    (also inside ``extern "C" { ... }`` blocks)."""
    scan = strip_comments(src)
    found = [(m.start(), m.group("name")) for m in _EXTERN_C_KERNEL.finditer(scan)]
    for m in _EXTERN_C_BLOCK.finditer(scan):
        depth, i = 1, m.end()
        while i < len(scan) and depth:
            depth += {"{": 1, "}": -1}.get(scan[i], 0)
            i += 1
        block = scan[m.end():i]
        # only kernels declared directly in the block, not inside a function body
        for km in _GLOBAL_KERNEL.finditer(block):
            if block[:km.start()].count("{") == block[:km.start()].count("}"):
                found.append((m.end() + km.start(), km.group("name")))
    names = []
    for _, name in sorted(found):
        if name not in names:
            names.append(name)
    return names


_LAUNCH_BOUNDS = re.compile(r"\b__launch_bounds__\s*\(")
_IDENT_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*(?:<[^;{}()]*>\s*)?\(")
_NOT_NAMES = {"__launch_bounds__", "__align__", "__attribute__", "alignas", "__declspec",
              "__maxnreg__", "__cluster_dims__", "decltype"}


def _split_top_level(text):
    """Splits at commas that are not nested in (), <>, [] or {}."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        if ch in "(<[{":
            depth += 1
        elif ch in ")>]}":
            depth -= 1
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def _template_params(scan, pos):
    """Names of the template parameters of the declaration containing ``pos``
    (the ``template <...>`` header right before it), or None."""
    start = max(scan.rfind(";", 0, pos), scan.rfind("}", 0, pos), scan.rfind("{", 0, pos))
    head = scan[start + 1:pos]
    m = re.search(r"\btemplate\s*<", head)
    if not m:
        return None
    depth, i = 1, m.end()
    while i < len(head) and depth:
        depth += {"<": 1, ">": -1}.get(head[i], 0)
        i += 1
    names = []
    for p in _split_top_level(head[m.end():i - 1]):
        p = p.split("=", 1)[0]
        ids = re.findall(r"[A-Za-z_]\w*", p)
        names.append(ids[-1] if ids else "")
    return names


def find_launch_bounds(src):
    """Maps kernel base name -> (first argument of its ``__launch_bounds__``
    as source text, names of its template parameters or None)."""
    scan = strip_comments(src)
    result = {}
    for m in _LAUNCH_BOUNDS.finditer(scan):
        depth, i = 1, m.end()
        while i < len(scan) and depth:
            depth += {"(": 1, ")": -1}.get(scan[i], 0)
            i += 1
        args = scan[m.end():i - 1]
        # first top-level argument
        depth, first = 0, []
        for ch in args:
            if ch == "," and depth == 0:
                break
            depth += {"(": 1, ")": -1}.get(ch, 0)
            first.append(ch)
        expr = " ".join("".join(first).split())
        for fm in _IDENT_CALL.finditer(scan, i):
            if fm.group(1) in _NOT_NAMES:
                continue
            result.setdefault(fm.group(1), (expr, _template_params(scan, m.start())))
            break
    return result


def _cstr(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _base_name(expr):
    base = expr.split("<", 1)[0].strip()
    return base.rsplit("::", 1)[-1].strip()


def _eval_int(expr):
    """Value of an integer-literal arithmetic expression, else None."""
    import ast
    expr = re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expr)
    if not re.fullmatch(r"[\d\s+\-*/%()<>&|^~]*", expr) or not expr.strip():
        return None
    try:
        tree = ast.parse(expr.replace("/", "//"), mode="eval")
    except SyntaxError:
        return None
    ok = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.operator, ast.unaryop)
    if not all(isinstance(n, ok) for n in ast.walk(tree)):
        return None
    try:
        v = eval(compile(tree, "<launch bounds>", "eval"), {"__builtins__": {}})
    except Exception:
        return None
    return v if isinstance(v, int) else None


def _launch_bounds_expr(bound, name_expr):
    if bound is None:
        return "0"
    expr, params = bound
    # Template kernel: substitute the name expression's template arguments.
    if params and "<" in name_expr and name_expr.rstrip().endswith(">"):
        args = _split_top_level(name_expr.rstrip()[name_expr.index("<") + 1:-1])
        if len(args) == len(params):
            mapping = dict(zip(params, args))
            expr = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: f"({mapping[m.group(0)]})"
                          if m.group(0) in mapping else m.group(0), expr)
    v = _eval_int(expr)
    if v is not None:
        return str(v)
    idents = sorted(set(re.findall(r"\b[A-Za-z_]\w*\b", expr)))
    if not idents:
        return f"(int)({expr})"
    cond = " && ".join(f"defined({x})" for x in idents)
    return f"\n#if {cond}\n(int)({expr})\n#else\n0\n#endif\n"


def make_translation_unit(code, name_expressions, file_name):
    """The C++ file handed to g++: prelude include, the (rewritten) source
    under its own file name, then the registration glue.  Returns
    ``(text, kernel_names)``."""
    names = []
    for e in list(name_expressions or ()) + find_extern_c_kernels(code):
        if e not in names:
            names.append(e)
    bounds = find_launch_bounds(code)
    fname = file_name.replace("\\", "\\\\").replace('"', '\\"')
    parts = ['#include "pygpuemu_prelude.h"\n', f'#line 1 "{fname}"\n', rewrite(code)]
    if not code.endswith("\n"):
        parts.append("\n")
    glue = []
    for i, e in enumerate(names):
        label = ("<name expression " + e + ">").replace("\\", "\\\\").replace('"', "'")
        glue.append(f'#line 1 "{label}"\n')
        glue.append(f"static constexpr auto pygpuemu_fp_{i} = &{e};\n")
        glue.append(
            f"static_assert(pygpuemu_detail::is_kernel_ptr<std::remove_cv_t<"
            f"decltype(pygpuemu_fp_{i})>>::value, {_cstr(e + ' is not a __global__ void function')});\n")
    glue.append(f'#line 1 "{_GLUE_FILE}"\n')
    glue.append("static thread_local char pygpuemu_tls_anchor;\n")
    glue.append('extern "C" __attribute__((visibility("default"))) void* '
                "pygpuemu_module_tls_anchor() { return &pygpuemu_tls_anchor; }\n")
    glue.append('extern "C" __attribute__((visibility("default"))) int '
                "pygpuemu_module_kernels(const pygpuemu_detail::KernelEntry** out) {\n")
    if names:
        glue.append("  static const pygpuemu_detail::KernelEntry entries[] = {\n")
        for i, e in enumerate(names):
            lb = _launch_bounds_expr(bounds.get(_base_name(e)), e)
            glue.append(f"    pygpuemu_detail::entry<pygpuemu_fp_{i}>({_cstr(e)}, {lb}),\n")
        glue.append("  };\n  *out = entries;\n")
    else:
        glue.append("  *out = nullptr;\n")
    glue.append(f"  return {len(names)};\n}}\n")
    return "".join(parts + glue), names
