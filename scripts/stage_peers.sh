#!/usr/bin/env bash
# Stage the peers' own code for scripts/peer_faithfulness.py: DIR/<name>/ gets the Python/Triton
# sources (*.py only: no configs, weights, images) of the authors' packages, their LICENSE and a SOURCE
# file naming the repository and commit. DIR is git-ignored (.peers/): their code never enters this
# repository; the faithfulness tool imports it at run time from DIR.
#
# Usage: scripts/stage_peers.sh DIR [MIRRORS]
#   MIRRORS (default /work/.mirror) holds git mirrors as <owner>+<name>/repo, as the session's `fetch`
#   tool makes them (fetch github:ByteDance-Seed/FlexPrefill, github:mit-han-lab/x-attention,
#   github:microsoft/MInference, github:xinghaow99/pbs-attn, github:qhfan/FlashPrefill).
set -euo pipefail
dir=${1:?usage: stage_peers.sh DIR [MIRRORS]}
mirrors=${2:-/work/.mirror}

# name, mirror folder, the package folders the tool imports
peers=(
  "flexprefill ByteDance-Seed+FlexPrefill flex_prefill"
  "xattention mit-han-lab+x-attention xattn"
  "minference microsoft+MInference minference"
  "pbs xinghaow99+pbs-attn pbs_attn"
  "flashprefill qhfan+FlashPrefill ops"
)
mkdir -p "$dir"
for entry in "${peers[@]}"; do
  read -r name mirror packages <<<"$entry"
  repo=${mirror/+//}
  git_dir=$mirrors/$mirror/repo
  if [ ! -d "$git_dir" ]; then
    echo "$name: no mirror at $git_dir (fetch github:$repo first); skipped" >&2
    continue
  fi
  rm -rf "${dir:?}/$name"
  mkdir -p "$dir/$name"
  # one file at a time (git show): a mirror may lack its largest blobs, which git archive would trip on
  # shellcheck disable=SC2086  # several package folders may be listed
  git -C "$git_dir" ls-tree -r --name-only HEAD -- $packages | grep '\.py$' | while read -r path; do
    mkdir -p "$dir/$name/$(dirname "$path")"
    git -C "$git_dir" show "HEAD:$path" >"$dir/$name/$path"
  done
  if git -C "$git_dir" cat-file -e HEAD:LICENSE 2>/dev/null; then
    git -C "$git_dir" show HEAD:LICENSE >"$dir/$name/LICENSE"
  fi
  printf 'repo github.com/%s\ncommit %s\n' "$repo" "$(git -C "$git_dir" rev-parse HEAD)" >"$dir/$name/SOURCE"
  echo "$name: $(find "$dir/$name" -name '*.py' | wc -l) files from $repo@$(git -C "$git_dir" rev-parse --short HEAD)"
done

# FlexPrefill imports einops (pure Python), which the GPU image may lack: carry its wheel; the tool
# puts DIR/_wheels/*.whl on sys.path (a pure-Python wheel imports straight from the zip).
mkdir -p "$dir/_wheels"
if ! ls "$dir"/_wheels/einops-*.whl >/dev/null 2>&1; then
  python3 -m pip download -q --no-deps einops==0.8.2 -d "$dir/_wheels" \
    || echo "einops wheel not downloaded: FlexPrefill then needs einops installed where it runs" >&2
fi
du -sh "$dir"
