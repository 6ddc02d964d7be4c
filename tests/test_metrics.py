"""The shipped `evaluate` metric modules against hand-computed examples, loaded offline by path."""

import numpy as np
import pytest

from modeling_vatt.metrics import load_classification_metric, load_retrieval_metric
from modeling_vatt.metrics.classification import average_precision, roc_auc

# Rows = audios, columns = texts. Audio 0 ranks its text first; audio 1 ranks text 0 (0.8) above its own (0.7);
# audio 2 ranks text 1 (0.6) above its own (0.4). Every text column ranks its own audio first.
SIMILARITY = [[0.9, 0.5, 0.1], [0.8, 0.7, 0.2], [0.3, 0.6, 0.4]]


@pytest.fixture(scope="module")
def retrieval():
    return load_retrieval_metric(keep_in_memory=True)


def test_retrieval_hand_computed(retrieval):
    scores = retrieval.compute(predictions=SIMILARITY, references=[0, 1, 2], ks=[1, 2])
    assert scores["audio_to_text_R@1"] == pytest.approx(1 / 3)
    assert scores["audio_to_text_R@2"] == pytest.approx(1.0)
    assert scores["audio_to_text_median_rank"] == 2.0
    assert scores["audio_to_text_mean_rank"] == pytest.approx(5 / 3)
    assert scores["text_to_audio_R@1"] == 1.0
    assert scores["text_to_audio_median_rank"] == 1.0
    assert scores["audio_to_text_chance_R@1"] == pytest.approx(1 / 3)
    assert scores["audio_to_text_chance_R@2"] == pytest.approx(2 / 3)


def test_retrieval_several_correct_texts_and_batches(retrieval):
    # Audio 1 is correct for texts 0 and 1: its best correct score (0.8) is the top of its row.
    retrieval.add_batch(predictions=SIMILARITY[:2], references=[[0], [0, 1]])
    retrieval.add_batch(predictions=SIMILARITY[2:], references=[[2]])
    scores = retrieval.compute(ks=[1])
    assert scores["audio_to_text_R@1"] == pytest.approx(2 / 3)
    # Text 0 has correct audios {0, 1}: 0.9 is first. Text 1: audio 1 (0.7) is first.
    assert scores["text_to_audio_R@1"] == 1.0
    # Audio 1 has 2 correct texts of 3: a random ranking puts one first with probability 2/3.
    assert scores["audio_to_text_chance_R@1"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 3) / 3)


def test_retrieval_ties_count_against_the_query(retrieval):
    scores = retrieval.compute(predictions=np.ones((4, 4)).tolist(), references=[0, 1, 2, 3], ks=[1])
    assert scores["audio_to_text_R@1"] == 0.0
    assert scores["audio_to_text_median_rank"] == 4.0


def test_retrieval_rejects_bad_references(retrieval):
    with pytest.raises(ValueError, match="column indices"):
        retrieval.compute(predictions=SIMILARITY, references=[0, 1, 3])


def test_average_precision_and_auc_by_hand():
    # Sorted: 0.9 (+), 0.8 (-), 0.3 (+), 0.1 (-): precision at the hits 1 and 2/3 -> AP 5/6; 3 of 4 pairs ordered.
    scores, labels = np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0])
    assert average_precision(scores, labels) == pytest.approx(5 / 6)
    assert roc_auc(scores, labels) == pytest.approx(3 / 4)
    # Tied scores form one threshold: precision 1/2 at recall 1; the tied pair counts one half.
    assert average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)


def test_multilabel_map_hand_computed():
    metric = load_classification_metric("multilabel", keep_in_memory=True)
    scores = [[0.9, 0.2, 0.5], [0.8, 0.7, 0.1], [0.3, 0.6, 0.4], [0.1, 0.4, 0.3]]
    # Class 0: AP 5/6, AUC 3/4 (as above). Class 1: positives 0.7 and 0.6 rank first -> AP 1, AUC 1.
    # Class 2 has no positive and is left out.
    labels = [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]]
    result = metric.compute(predictions=scores, references=labels)
    assert result["mAP"] == pytest.approx((5 / 6 + 1) / 2)
    assert result["AUC"] == pytest.approx((3 / 4 + 1) / 2)
    assert result["num_scored_classes"] == 2
    assert result["d_prime"] == pytest.approx(1.6266, abs=1e-3)  # sqrt(2) * Phi^-1(0.875)


def test_multiclass_accuracy_and_macro_f1():
    metric = load_classification_metric("multiclass", keep_in_memory=True)
    labels = [0, 0, 1, 2]
    scores = np.eye(3)[[0, 1, 1, 2]].tolist()  # predicts 0, 1, 1, 2
    result = metric.compute(predictions=scores, references=labels)
    assert result["accuracy"] == pytest.approx(3 / 4)
    assert result["top5_accuracy"] == 1.0
    # F1: class 0 = 2*1/(1+2), class 1 = 2*1/(2+1), class 2 = 1.
    assert result["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    with pytest.raises(ValueError, match="Labels must lie"):
        metric.compute(predictions=scores, references=[0, 0, 1, 3])
