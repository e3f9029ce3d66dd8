"""Copy finding: which images are one radiograph, whatever their turn, zoom, crop, mirror or encoding.

The one API that data, audit, runner, lookup and the demo use (imagededup's ``encode_images`` /
``find_duplicates`` shape):

- ``encode(pixels)``: the per-image facts (hashes, thumbnail, letterboxed square), made once
  when the data layer decodes an image and cached with it;
- ``find_copies(encoded)``: copy groups within one set (exact, re-encoded, then aligned copies,
  candidates to a fixpoint so no copy family can crowd out the others);
- ``verify_split(encoded, test_rows, train_rows)`` / ``match_sets``: copies across two sets,
  found afresh without any grouping (the split verifier, the external test, the lookup);
- ``nearest_similarity``: how close each image comes to a set, copy or not;
- ``plant``: planted copies of known kinds, the ground truth the benchmark and tests use.

Pure computation on arrays: this package reads no files and imports nothing from the data layer.
"""

from fracbench.copies.confirm import Matcher, PairCheck
from fracbench.copies.features import MID, THUMB, dihedral, encode, mid_image, phash64, thumb
from fracbench.copies.groups import CopyGroup, Encoded, EncodedImages, find_copies, rules_fingerprint
from fracbench.copies.planted import KINDS, plant
from fracbench.copies.verify import (
    Crossing,
    Matches,
    match_sets,
    nearest_similarity,
    verify_split,
    verify_split_cached,
)

__all__ = ["KINDS", "MID", "THUMB", "CopyGroup", "Crossing", "Encoded", "EncodedImages", "Matcher", "Matches", "PairCheck", "dihedral",
           "encode", "find_copies", "match_sets", "mid_image", "nearest_similarity", "phash64", "plant",
           "rules_fingerprint", "thumb", "verify_split", "verify_split_cached"]
