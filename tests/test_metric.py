"""EgoMCQ metric on hand-made predictions, and its sharded evaluation sampler."""
import math

import torch

from model.metric import egomcq_accuracy, egomcq_counts
from trainer.egomcq_eval import ShardSampler


def test_inter_and_intra_accuracy_exact():
    # 5 questions: 3 inter (type 1), 2 intra (type 2).
    scores = torch.tensor([
        [0.9, 0.1, 0.0, 0.0, 0.0],   # predicts 0, answer 0  -> hit   (inter)
        [0.1, 0.2, 0.8, 0.0, 0.0],   # predicts 2, answer 1  -> miss  (inter)
        [0.0, 0.0, 0.0, 0.1, 0.7],   # predicts 4, answer 4  -> hit   (inter)
        [0.3, 0.2, 0.1, 0.0, 0.0],   # predicts 0, answer 3  -> miss  (intra)
        [0.0, 0.0, 0.5, 0.1, 0.0],   # predicts 2, answer 2  -> hit   (intra)
    ])
    correct = torch.tensor([0, 1, 4, 3, 2])
    types = torch.tensor([1, 1, 1, 2, 2])
    counts = egomcq_counts(scores, correct, types)
    assert counts.tolist() == [[2.0, 3.0], [1.0, 2.0]]
    result = egomcq_accuracy(counts)
    assert math.isclose(result["inter_video_acc"], 200 / 3)
    assert result["intra_video_acc"] == 50.0
    assert (result["inter_video_questions"], result["intra_video_questions"]) == (3, 2)


def test_counts_from_shards_add_up_to_the_whole():
    torch.manual_seed(0)
    scores, correct, types = torch.randn(11, 5), torch.randint(0, 5, (11,)), torch.randint(1, 3, (11,))
    whole = egomcq_counts(scores, correct, types)
    shards = [ShardSampler(11, rank, 3).indices for rank in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))
    summed = sum(egomcq_counts(scores[s], correct[s], types[s]) for s in shards)
    assert torch.equal(summed, whole)


def test_type_with_no_questions_is_nan_not_an_error():
    result = egomcq_accuracy(egomcq_counts(torch.eye(5)[:2], torch.tensor([0, 1]), torch.tensor([1, 1])))
    assert result["inter_video_acc"] == 100.0 and math.isnan(result["intra_video_acc"])


def test_egomcq_query_groups_score_their_questions_alone():
    from trainer.evaluators.egomcq import EgoMCQEvaluator
    # 4 questions; the answer is choice 0 and the video equals the text for the queries answered right
    text = torch.eye(4)
    right = [True, False, True, True]
    video = torch.stack([torch.stack([text[i] if (c == 0) == right[i] else -text[i] for c in range(5)])
                         for i in range(4)]).flatten(0, 1)
    batch = {"text": ["taps the red circle", "taps the blue square", "lifts the red circle", "holds it"],
             "correct": torch.zeros(4, dtype=torch.long), "type": torch.tensor([2, 2, 2, 1])}
    evaluator = EgoMCQEvaluator(query_groups={"tap": r"\btaps\b", "red": "red"})
    evaluator.reset()
    evaluator.process(batch, {"text": text, "video": {"": video, "scale4/": video}})
    result = evaluator.compute()
    assert result["intra_video_acc"] == 100 * 2 / 3 and result["inter_video_acc"] == 100.0
    assert result["tap/intra_video_acc"] == 50.0 and result["tap/intra_video_questions"] == 2
    assert math.isnan(result["tap/inter_video_acc"])
    assert result["red/intra_video_acc"] == 100.0 and result["red/scale4/intra_video_questions"] == 2
