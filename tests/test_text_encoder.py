"""The pretrained item-text encoder, loaded offline from its PyPI package."""
from __future__ import annotations

import numpy as np

from socialrec.features.text_embedding import TextEncoder, resolve_model_dir


def test_repeated_texts_are_encoded_once_and_each_row_gets_its_own_vector(conf):
    text = conf["text"]
    encoder = TextEncoder(resolve_model_dir(text["model"]), text["max_length"], batch_size=2)
    rows_encoded = []
    encoder.model.embeddings.register_forward_hook(lambda module, inputs, output: rows_encoded.append(len(output)))
    texts = ["Category: DVDs", "Red kettle. Category: kitchen", "Category: DVDs", "Category: Beauty"]

    vectors = encoder.encode(texts)

    assert sum(rows_encoded) == 3  # three distinct passages for four rows
    assert vectors.shape == (4, encoder.model.config.hidden_size)
    singles = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(vectors, singles, atol=1e-5)  # row order kept; padding changes nothing
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[3])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, encoder.model.config.hidden_size)
