"""A database shaped like Semantik's, for the benchmarks: collections, documents, and text chunks of
~60 natural-language-like words (a few thousand syllable-built words drawn with a Zipf-like skew,
so the text compresses the way real prose does, unlike pgbench's filler), jsonb metadata on each,
and an index. `--size` is in MB of database (about 1700 chunks per MB).

    python bench/semantik_data.py --size 500     # prints the libpq env to reach it, or
    from bench.semantik_data import fill        # fill(psql_argv, env, size_mb)
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator, Mapping, Sequence

CHUNKS_PER_MB = 1700  # measured: 59k chunks make a 35 MB database
SCHEMA = """
DROP TABLE IF EXISTS chunks, documents, collections CASCADE;
CREATE TABLE collections (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    embedding_model text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    config jsonb NOT NULL
);
CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    collection_id int NOT NULL REFERENCES collections(id),
    file_path text NOT NULL,
    content_hash text NOT NULL,
    mime_type text NOT NULL,
    file_size bigint NOT NULL,
    created_at timestamptz NOT NULL,
    meta jsonb NOT NULL
);
CREATE TABLE chunks (
    id bigserial PRIMARY KEY,
    document_id bigint NOT NULL REFERENCES documents(id),
    chunk_index int NOT NULL,
    content text NOT NULL,
    token_count int NOT NULL,
    metadata jsonb NOT NULL
);
"""

FILL = """
INSERT INTO collections (name, embedding_model, config)
SELECT 'collection ' || c, 'Qwen/Qwen3-Embedding-0.6B',
       jsonb_build_object('chunk_size', 512, 'chunk_overlap', 50, 'quantization', 'float16', 'public', c % 2 = 0)
FROM generate_series(1, 8) AS c;

INSERT INTO documents (collection_id, file_path, content_hash, mime_type, file_size, created_at, meta)
SELECT 1 + d % 8, '/data/library/' || (d % 97) || '/report-' || d || '.pdf', md5(d::text),
       (ARRAY['application/pdf', 'text/markdown', 'text/html', 'text/plain'])[1 + d % 4],
       10000 + (d * 7919) % 5000000,
       timestamptz '2025-01-01' + (d % 500000) * interval '1 minute',
       jsonb_build_object('author', 'author ' || (d % 311), 'pages', 1 + d % 240, 'language', 'en',
                          'tags', jsonb_build_array('tag' || (d % 17), 'tag' || (d % 29)))
FROM generate_series(1, :documents) AS d;

"""

INDEX = """
CREATE INDEX chunks_document_idx ON chunks (document_id, chunk_index);
ANALYZE;
"""


def vocabulary(size: int = 6000) -> list[str]:
    """Pronounceable words built from syllables, most common first."""
    first = ["ka", "re", "to", "mi", "su", "lo", "na", "pe", "di", "vu", "sha", "tri", "en", "or", "al"]
    first += ["qu", "be", "fo", "gi", "ha", "ju", "ly", "ro", "ze", "the", "ing", "ter", "ver", "con", "pro"]
    middle = ["", "n", "s", "t", "r", "l", "d", "m"]
    third = ["", "a", "e", "i", "o", "u", "ent", "ion", "al", "er", "y"]
    fourth = ["", "ba", "ce", "do", "fi", "gu", "ma", "ne", "po", "ri", "sa"]
    words = []
    for i in range(size):
        word = first[i % 30] + middle[(i // 30) % 8] + third[(i // 240) % 11] + fourth[(i // 2640) % 11]
        words.append(word)
    return words


def chunk_rows(count: int, seed: int = 20261126) -> Iterator[str]:
    """COPY text lines for `count` chunks: ~60 words each, drawn with a Zipf-like skew."""
    import json
    import random

    rng = random.Random(seed)
    words = vocabulary()
    weights = list(itertools.accumulate(1 / (rank + 1) ** 1.05 for rank in range(len(words))))
    for g in range(1, count + 1):
        length = 52 + g % 17
        text = " ".join(rng.choices(words, cum_weights=weights, k=length)) + "."
        meta = json.dumps(
            {"page": 1 + g % 240, "offset": (g % 40) * 512, "score": (g % 1000) / 1000, "section": f"section {g % 23}"}
        )
        yield f"{1 + (g - 1) // 40}\t{(g - 1) % 40}\t{text}\t{length + 9}\t{meta}\n"


def fill(psql: Sequence[str], env: Mapping[str, str], size_mb: float) -> int:
    """Create and fill the Semantik-shaped tables through `psql` (argv up to the database); return the chunk count."""
    chunks = max(40, int(size_mb * CHUNKS_PER_MB))
    documents = (chunks + 39) // 40
    base = [*psql, "-q", "-v", "ON_ERROR_STOP=1"]
    variables = ["-v", f"documents={documents}"]
    subprocess.run([*base, *variables], input=SCHEMA + FILL, text=True, env=dict(env), check=True, capture_output=True)
    copy = "\\copy chunks (document_id, chunk_index, content, token_count, metadata) FROM STDIN"
    process = subprocess.Popen([*base, "-c", copy], stdin=subprocess.PIPE, env=dict(env), text=True)
    assert process.stdin is not None
    batch: list[str] = []
    for line in chunk_rows(chunks):
        batch.append(line)
        if len(batch) == 5000:
            process.stdin.write("".join(batch))
            batch.clear()
    process.stdin.write("".join(batch))
    process.stdin.close()
    if process.wait() != 0:
        raise SystemExit("loading the chunks failed")
    subprocess.run(base, input=INDEX, text=True, env=dict(env), check=True, capture_output=True)
    return chunks
