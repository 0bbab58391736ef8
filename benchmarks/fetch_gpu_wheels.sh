#!/usr/bin/env bash
# Downloads, on a machine with network, the wheels that benchmarks/gpu_check.sh needs and the GPU
# machines lack (they have no network), for their Python 3.12 on x86-64 Linux, into .whl/ (ignored
# by git; /.whl/ is in .gitignore). gpu_check.sh installs whatever is in .whl/ with
#   python3 -m pip install --no-index --no-deps --target <work>/site .whl/*.whl
# and puts that folder on PYTHONPATH. On the device machine, pass `carry: [".whl"]`.
#
#   bash benchmarks/fetch_gpu_wheels.sh             # the default set below
#   GAPOPS_GPU_WHEELS="inf_cl==1.2.1" bash benchmarks/fetch_gpu_wheels.sh   # another set
#
# Default set (each pinned; --no-deps, so every missing dependency is named here):
#   open_clip_torch  open_clip's ClipLoss for the benchmark (needs ftfy; regex, tqdm, timm,
#                    torchvision, huggingface_hub, safetensors are on the GPU machines already)
#   ftfy, wcwidth    open_clip's tokenizer imports them at `import open_clip`
#   inf_cl           Inf-CL's cal_inf_loss (needs triton and numpy: present there)
#   memeff           memeff's MemoryEfficientCLIPLoss, a newer Triton CLIP loss (needs torch only;
#                    pure-Python wheel memeff-0.3.1-py3-none-any.whl on PyPI)
#   siglip-kernel    siglip_kernel.fused_siglip_loss for the sigmoid rows (needs torch, triton;
#                    pure-Python wheel siglip_kernel-0.1.2-py3-none-any.whl on PyPI)
#   setuptools       >= 77 reads pyproject's SPDX license string (the build falls back to a
#                    patched copy of pyproject.toml when the machine's setuptools is older)
# About 2.6 MB in all (the device machine carries at most 64 MiB with the working tree).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${GAPOPS_WHEEL_DIR:-.whl}
PKGS=(${GAPOPS_GPU_WHEELS:-open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 inf_cl==1.2.1 memeff==0.3.1
       siglip-kernel==0.1.2 setuptools==80.9.0})
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux1_x86_64)
mkdir -p "$DEST"
PFLAGS=()
for p in "${PLATFORMS[@]}"; do PFLAGS+=(--platform "$p"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PFLAGS[@]}" -d "$DEST" "${PKGS[@]}"

# Two versions of one package stop the whole install there: keep the newest file of each name.
python3 - "$DEST" <<'PY'
import os, re, sys
dest = sys.argv[1]
by_name = {}
for f in sorted(os.listdir(dest)):
    if f.endswith(".whl"):
        name = re.split(r"-\d", f, 1)[0].lower().replace("_", "-")
        by_name.setdefault(name, []).append(f)
for name, files in by_name.items():
    for old in sorted(files, key=lambda f: os.path.getmtime(os.path.join(dest, f)))[:-1]:
        print(f"fetch_gpu_wheels.sh: removing {old} (another version of {name} is newer)")
        os.remove(os.path.join(dest, old))
PY

echo "fetch_gpu_wheels.sh: in $DEST/:"
python3 - "$DEST" <<'PY'
import os, sys, zipfile
dest = sys.argv[1]
for f in sorted(os.listdir(dest)):
    if not f.endswith(".whl"):
        continue
    with zipfile.ZipFile(os.path.join(dest, f)) as z:
        meta = next(n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        deps = [l.split(":", 1)[1].strip() for l in z.read(meta).decode().splitlines()
                if l.startswith("Requires-Dist:") and "extra ==" not in l]
    print(f"  {f}  (needs: {', '.join(deps) or 'nothing'})")
PY
du -sh "$DEST" | awk '{print "fetch_gpu_wheels.sh: " $1 " in all"}'
