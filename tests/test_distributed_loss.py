"""Two CPU ranks (gloo) under DDP reproduce the gradients of one process on the whole batch.

DDP averages gradients over ranks; the objective's gather sums them in its backward; the
two cancel, so no loss rescaling is needed (see model.distributed_gather).
"""
import pytest
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from gloo_ranks import run_ranks
from model.distributed_gather import all_gather_tensor, all_gather_with_grad, gather_batch_sizes
from model.loss import MultiScaleEgoNCE

WORLD_SIZE = 2
# per-rank batch sizes of each case
CASES = {'equal': (4, 4), 'unequal': (3, 5)}


class TinyEncoderPair(nn.Module):
    """Linear 'text' and 'video' encoders into a shared 4-d space."""

    def __init__(self):
        super().__init__()
        self.text = nn.Linear(6, 4)
        self.video = nn.Linear(5, 4)

    def forward(self, text_features, video_features):
        return self.text(text_features), self.video(video_features)


def make_model():
    torch.manual_seed(0)
    return TinyEncoderPair()


def make_objective():
    return MultiScaleEgoNCE(consistency_weight=0.0, temperature=0.05)


def make_batch(size, seed):
    generator = torch.Generator().manual_seed(seed)
    return {'text': torch.randn(size, 6, generator=generator),
            'video': torch.randn(size, 5, generator=generator),
            # 3 classes each, so clips on different ranks share tags and become EgoNCE positives
            'verb': (torch.rand(size, 3, generator=generator) < 0.4).float(),
            'noun': (torch.rand(size, 3, generator=generator) < 0.4).float()}


def gather_weights(total):
    """[total, 6] distinct weights: rank r's loss on the gathered text is ``(r + 1) * sum(weights * text)``."""
    return torch.arange(total * 6, dtype=torch.float32).reshape(total, 6)


def loss_and_grads(model, objective, batch):
    model.zero_grad()
    text, video = model(batch['text'], batch['video'])
    loss, _ = objective(text, video, batch['verb'], batch['noun'])
    loss.backward()
    module = model.module if isinstance(model, DistributedDataParallel) else model
    return loss.detach(), {name: p.grad.detach().clone() for name, p in module.named_parameters()}


def rank_worker(rank, world_size, out_dir):
    model = DistributedDataParallel(make_model())
    objective = make_objective()
    results = {}
    for seed, (name, sizes) in enumerate(CASES.items()):
        batch = make_batch(sum(sizes), seed)
        start = sum(sizes[:rank])
        local = {key: value[start:start + sizes[rank]] for key, value in batch.items()}
        loss, grads = loss_and_grads(model, objective, local)
        text = local['text'].clone().requires_grad_(True)
        gathered = all_gather_with_grad(text)
        ((gathered * gather_weights(sum(sizes))).sum() * (rank + 1)).backward()
        results[name] = {'loss': loss, 'grads': grads,
                         'sizes': gather_batch_sizes(sizes[rank], torch.device('cpu')),
                         'verb': all_gather_tensor(local['verb']),
                         'text': gathered.detach(), 'text_grad': text.grad}
    torch.save(results, f'{out_dir}/rank{rank}.pt')


@pytest.fixture(scope='module')
def rank_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('ranks')
    run_ranks(rank_worker, WORLD_SIZE, str(out_dir))
    return [torch.load(out_dir / f'rank{rank}.pt') for rank in range(WORLD_SIZE)]


@pytest.mark.parametrize('case', list(CASES))
def test_ranks_match_one_process_on_the_concatenated_batch(rank_results, case):
    seed = list(CASES).index(case)
    batch = make_batch(sum(CASES[case]), seed)
    expected_loss, expected_grads = loss_and_grads(make_model(), make_objective(), batch)
    for rank, results in enumerate(rank_results):
        got = results[case]
        torch.testing.assert_close(got['loss'], expected_loss, rtol=1e-6, atol=1e-6,
                                   msg=lambda m: f'rank {rank} {case} loss: {m}')
        for name, grad in expected_grads.items():
            torch.testing.assert_close(got['grads'][name], grad, rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f'rank {rank} {case} grad of {name}: {m}')


@pytest.mark.parametrize('case', list(CASES))
def test_gathers_concatenate_rank_batches_without_padding(rank_results, case):
    seed = list(CASES).index(case)
    batch = make_batch(sum(CASES[case]), seed)
    for results in rank_results:
        assert results[case]['sizes'] == list(CASES[case])
        assert torch.equal(results[case]['verb'], batch['verb'])
        assert torch.equal(results[case]['text'], batch['text'])


@pytest.mark.parametrize('case', list(CASES))
def test_gather_backward_sums_every_rank_gradient(rank_results, case):
    sizes = CASES[case]
    weights = gather_weights(sum(sizes))
    ranks_summed = sum(rank + 1 for rank in range(WORLD_SIZE))
    for rank, results in enumerate(rank_results):
        rows = slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))
        torch.testing.assert_close(results[case]['text_grad'], ranks_summed * weights[rows], rtol=0, atol=0)
