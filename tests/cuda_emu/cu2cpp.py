#!/usr/bin/env python3
"""Turns a CUDA source of kernels/cuda (.cu or .cuh) into host C++ for the emulator
in tests/cuda_emu. Only CUDA's syntax is rewritten; the code is otherwise compiled
as written, against the stand-in headers in tests/cuda_emu/include:

  k<<<grid, block[, smem[, stream]]>>>(args)
      -> ::emu::launch(::emu::Config(grid, block, ...), site, [=](auto... a) { k(a...); }, args)
  extern __shared__ T name[];       -> T* name = ::emu::dynamic_smem<T>();
  __shared__ T name[N]...;          -> auto& name = ::emu::shared_var<T[N]...>([] {});
  __launch_bounds__(n) ... kernel(...) {  -> the body starts with EMU_LAUNCH_BOUNDS(n);
  #include "kernels/cuda/x.cuh"     -> #include "x.cuh" (its translation, next to this one)
  #pragma unroll                    -> (dropped)
  Tensor::full / zeros / ones(...)  -> ::emu::tensor_full / zeros / ones(...): in a CUDA
      build these fill through kernels::cuda::fill (BET_KERNEL); the CPU-only libbet the
      test links refuses to fill a cuda tensor, so the emulator's versions call
      kernels::cuda::fill themselves (tests/cuda_emu/emu_tensor.cpp)

Line numbers are kept (each replacement is padded with the newlines it replaced) and
a #line directive names the original file, so compiler messages, __FILE__ and
__LINE__ point into kernels/cuda. Comments and string literals are left alone.

usage: cu2cpp.py INPUT OUTPUT SOURCE_ROOT
"""
import os
import re
import sys


def blank_comments_and_strings(s):
    """s with comments and string/char literals replaced by spaces (newlines kept)."""
    out = list(s)
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if s.startswith('//', i):
            j = s.find('\n', i)
            j = n if j < 0 else j
        elif s.startswith('/*', i):
            j = s.find('*/', i + 2)
            j = n if j < 0 else j + 2
        elif c in '"\'':
            j = i + 1
            while j < n and s[j] != c:
                j += 2 if s[j] == '\\' else 1
            j += 1
        else:
            i += 1
            continue
        for k in range(i, min(j, n)):
            if out[k] != '\n':
                out[k] = ' '
        i = j
    return ''.join(out)


def matching(code, i, open_c, close_c):
    depth = 0
    for j in range(i, len(code)):
        if code[j] == open_c:
            depth += 1
        elif code[j] == close_c:
            depth -= 1
            if depth == 0:
                return j
    raise SyntaxError('unbalanced %s at offset %d' % (open_c, i))


def padded(original, replacement):
    missing = original.count('\n') - replacement.count('\n')
    if missing < 0:
        raise SyntaxError('replacement adds lines')
    return replacement + '\n' * missing


def launch_edits(code, s):
    edits = []
    pos = 0
    while True:
        i = code.find('<<<', pos)
        if i < 0:
            return edits
        k = i - 1
        while code[k].isspace():
            k -= 1
        end = k + 1
        if code[k] == '>':  # template arguments of the callee
            depth = 0
            while True:
                if code[k] == '>':
                    depth += 1
                elif code[k] == '<':
                    depth -= 1
                k -= 1
                if depth == 0:
                    break
        while k >= 0 and (code[k].isalnum() or code[k] in '_:'):
            k -= 1
        start = k + 1
        callee = ' '.join(s[start:end].split())
        if not callee:
            raise SyntaxError('launch without a callee at offset %d' % i)
        cfg_end = code.find('>>>', i + 3)
        a = cfg_end + 3
        while code[a].isspace():
            a += 1
        if code[a] != '(':
            raise SyntaxError('launch of %s without arguments' % callee)
        b = matching(code, a, '(', ')')
        cfg = ' '.join(s[i + 3:cfg_end].split())
        args = s[a + 1:b].strip()
        key = '::emu::kernel_key(%s)' % callee if re.fullmatch(r'[A-Za-z_]\w*', callee) else 'nullptr'
        repl = ('::emu::launch(::emu::Config(%s), ::emu::LaunchSite{"%s", __FILE__, __LINE__, %s}, '
                '[=](auto... emu_a_) { %s(emu_a_...); }%s)'
                % (cfg, callee, key, callee, (', ' + ' '.join(args.split())) if args else ''))
        edits.append((start, b + 1, padded(s[start:b + 1], repl)))
        pos = b + 1


TYPE = r'(?:__align__\(\s*\d+\s*\)\s+)?([A-Za-z_][\w:<>, ]*?)'
DYNAMIC = re.compile(r'extern\s+__shared__\s+' + TYPE + r'\s+(\w+)\s*\[\s*\]\s*;')
STATIC = re.compile(r'__shared__\s+' + TYPE + r'\s+(\w+)\s*((?:\[[^\]]*\]\s*)*);')
BOUNDS = re.compile(r'__launch_bounds__\s*\(')
PRAGMA = re.compile(r'^[ \t]*#[ \t]*pragma[ \t]+unroll\b[^\n]*', re.M)
INCLUDE = re.compile(r'#include\s+"kernels/cuda/(\w+\.cuh)"')
FACTORY = re.compile(r'(?<![\w:])Tensor::(full|zeros|ones)\s*\(')


def regex_edits(code, s):
    edits = []
    for m in DYNAMIC.finditer(code):
        t, name = ' '.join(m.group(1).split()), m.group(2)
        edits.append((m.start(), m.end(), padded(s[m.start():m.end()],
                                                 '%s* %s = ::emu::dynamic_smem<%s>();' % (t, name, t))))
    taken = [(a, b) for a, b, _ in edits]
    for m in STATIC.finditer(code):
        if any(a <= m.start() < b for a, b in taken):
            continue
        t, name, dims = ' '.join(m.group(1).split()), m.group(2), ''.join(m.group(3).split())
        edits.append((m.start(), m.end(), padded(s[m.start():m.end()],
                                                 'auto& %s = ::emu::shared_var<%s%s>([] {});' % (name, t, dims))))
    for m in BOUNDS.finditer(code):
        p = matching(code, m.end() - 1, '(', ')')
        bound = ' '.join(s[m.end():p].split())
        q = code.find('(', p + 1)  # the kernel's parameter list
        r = matching(code, q, '(', ')')
        body = r + 1
        while code[body].isspace():
            body += 1
        if code[body] != '{':
            raise SyntaxError('__launch_bounds__(%s): no kernel body' % bound)
        edits.append((body + 1, body + 1, ' EMU_LAUNCH_BOUNDS(%s);' % bound))
    for m in PRAGMA.finditer(code):
        edits.append((m.start(), m.end(), ''))
    for m in FACTORY.finditer(code):
        edits.append((m.start(), m.end(), '::emu::tensor_%s(' % m.group(1)))
    for m in INCLUDE.finditer(s):
        edits.append((m.start(), m.end(), '#include "%s"' % m.group(1)))
    return edits


def translate(s):
    code = blank_comments_and_strings(s)
    edits = sorted(launch_edits(code, s) + regex_edits(code, s), key=lambda e: e[0])
    out, pos = [], 0
    for a, b, text in edits:
        if a < pos:
            raise SyntaxError('overlapping rewrites at offset %d' % a)
        out.append(s[pos:a])
        out.append(text)
        pos = b
    out.append(s[pos:])
    result = ''.join(out)
    left = blank_comments_and_strings(result)
    for token in ('<<<', '__shared__'):
        if token in left:
            line = left[:left.index(token)].count('\n') + 1
            raise SyntaxError('%s left untranslated at line %d' % (token, line))
    return result


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, dst, root = sys.argv[1:]
    with open(src, encoding='utf-8') as f:
        text = f.read()
    name = os.path.relpath(os.path.abspath(src), os.path.abspath(root))
    try:
        body = translate(text)
    except SyntaxError as e:
        sys.exit('cu2cpp.py: %s: %s' % (name, e))
    head = ('// Generated by tests/cuda_emu/cu2cpp.py from %s: do not edit.\n'
            '#include <cuda_runtime.h>\n%s'
            '#line 1 "%s"\n' % (name, '' if src.endswith('.cuh') else '#include "cuda_emu_tensor.h"\n', name))
    with open(dst, 'w', encoding='utf-8') as f:
        f.write(head + body)


if __name__ == '__main__':
    main()
