"""Video-text contrastive losses and the trainer-facing objectives.

Objectives (config ``loss.type``, registered in ``utils.registry.LOSSES``): ``EgoNCEObjective``
(baseline: EgoNCE with a fixed or scheduled temperature) and ``MultiScaleEgoNCE`` (alias
``EnhancedEgoNCEWithTemporal``: the same plus the temporal consistency term). Both derive from
``ScheduledEgoNCE`` and are called as ``objective(text_embeds, video_embeds, verb_vec=, noun_vec=,
temporal_pairs=, scale_embeds=, step=, epoch=, total_epochs=) -> (loss, components)``.
"""
import inspect
import logging
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.distributed_gather import all_gather_tensor, all_gather_with_grad, gather_batch_sizes
from model.losses.contrastive import contrastive_loss
from model.schedulers import CosineTemperatureScheduler
from model.losses.ranking import AdaptiveMaxMarginRankingLoss, MaxMarginRankingLoss  # noqa: F401
from model.temporal_loss import TemporalConsistencyLoss
from utils.config import ArgsOf
from utils.registry import LOSSES

logger = logging.getLogger(__name__)

__all__ = ['EgoNCE', 'NormSoftmaxLoss', 'ScheduledEgoNCE', 'EgoNCEObjective', 'MultiScaleEgoNCE',
           'EnhancedEgoNCEWithTemporal', 'TemporalConsistencyLoss', 'CosineTemperatureScheduler']


def _self_cosine(vectors):
    """[N, N] cosine similarities between the rows of ``vectors`` [N, C]; all-zero rows give 0."""
    unit = F.normalize(vectors.float(), dim=1, eps=1e-8)
    return unit @ unit.t()


def _check_square(sim):
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity matrix must be square [N, N] (text x video), got {tuple(sim.shape)}")


def multi_positive_nce(sim, positives, temperature):
    """Symmetric contrastive loss with a set of positives per row and per column.

    sim: [N, N] similarities (rows text, columns video); positives: bool [N, N], the
    diagonal must be True. Returns, in float32 (float64 for float64 input),
    ``-mean_i log sum_{j: P_ij} softmax(sim/t, dim=1)_ij - mean_j log sum_{i: P_ij} softmax(sim/t, dim=0)_ij``
    computed with log-sum-exp (no log of 0).
    """
    return contrastive_loss(sim, positives, temperature=temperature, reduction='sum_dirs', targets='hard')


@LOSSES.register()
class NormSoftmaxLoss(nn.Module):
    """Symmetric InfoNCE over a [N, N] cosine-similarity matrix (EgoVLP's NormSoftmaxLoss)."""

    def __init__(self, temperature: float = 0.05):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, sim, temperature=None):
        _check_square(sim)
        positives = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        return multi_positive_nce(sim, positives, self.temperature if temperature is None else temperature)


class EgoNCE(nn.Module):
    """EgoVLP's EgoNCE: InfoNCE whose positives are the pairs sharing action tags.

    With verb and noun: ``P = (cos(verb_i, verb_j) * cos(noun_i, noun_j) + I) > 0``, i.e.
    i and j share a verb class AND a noun class, or i == j. Noun only: ``(cos(noun) + I) > 0``;
    verb only likewise; neither: ``P = I`` (symmetric InfoNCE). Tag vectors are multi-hot
    [N, num_classes]; all-zero vectors share nothing.
    """

    def __init__(self, temperature: float = 0.05, noun: bool = True, verb: bool = True):
        super().__init__()
        self.temperature = float(temperature)
        self.noun = bool(noun)
        self.verb = bool(verb)

    def positive_mask(self, num_items, verb_vec=None, noun_vec=None, device=None):
        """Bool [N, N] positives from verb_vec [N, V] and noun_vec [N, C] per the enabled tags."""
        needed = {'verb_vec': (self.verb, verb_vec), 'noun_vec': (self.noun, noun_vec)}
        for name, (enabled, vec) in needed.items():
            if not enabled:
                continue
            if vec is None:
                raise ValueError(f"EgoNCE({name.split('_')[0]}=True) needs {name}; "
                                 f"set {name.split('_')[0]}=False to train without it")
            if vec.ndim != 2 or vec.shape[0] != num_items:
                raise ValueError(f"EgoNCE: {name} must have shape [{num_items}, classes], got {tuple(vec.shape)}")
        eye = torch.eye(num_items, dtype=torch.float32, device=device)
        shared = None
        if self.verb:
            shared = _self_cosine(verb_vec.to(device))
        if self.noun:
            noun_cos = _self_cosine(noun_vec.to(device))
            shared = noun_cos if shared is None else shared * noun_cos
        return (eye if shared is None else shared + eye) > 0

    def forward(self, sim, verb_vec=None, noun_vec=None, temperature=None):
        """Scalar float32 loss for sim [N, N] (rows text, columns video) over the same N clips."""
        _check_square(sim)
        positives = self.positive_mask(sim.shape[0], verb_vec, noun_vec, device=sim.device)
        return multi_positive_nce(sim, positives, self.temperature if temperature is None else temperature)


def _gather_tags(tag_vec, sizes, device):
    """Global-batch float32 copy of a local multi-hot tag matrix [b, classes] (None stays None)."""
    if tag_vec is None:
        return None
    return all_gather_tensor(tag_vec.to(device=device, dtype=torch.float32), sizes)


def _build_from_dict(cls, args, option, owner):
    """``cls(**args)`` with unknown keys reported under the objective's ``option`` name."""
    allowed = set(inspect.signature(cls).parameters)
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise ValueError(f"{owner}: unknown key(s) {unknown} in '{option}'; allowed: {sorted(allowed)}")
    return cls(**args)


TemperatureSchedule = Annotated[dict | None, ArgsOf(CosineTemperatureScheduler)]


class ScheduledEgoNCE(nn.Module):
    """EgoNCE on the global batch with a fixed or cosine-scheduled temperature; the shared base of the objectives.

    Args:
        temperature: EgoNCE temperature when ``temperature_schedule`` is None.
        temperature_schedule: None or ``CosineTemperatureScheduler`` args {initial_temp, final_temp,
            total_steps}; the temperature then follows ``step``. Without ``total_steps`` the schedule spans the
            run: the engine calls :meth:`set_total_steps` with the run's optimizer steps.
        noun, verb: which tags define EgoNCE positives (both False: InfoNCE).

    Distributed: with torch.distributed initialised and world > 1, text/video embeddings
    and tag vectors are all-gathered (unequal per-rank batches allowed); the gather's
    backward sums gradients over ranks, so with DDP's gradient averaging W ranks x b clips
    give the EgoNCE gradients of one process with the W*b clips. Do not rescale the loss.
    Everything is computed in float32 with autocast disabled, whatever the embeddings' dtype.
    """

    def __init__(self, temperature: float = 0.05, temperature_schedule: TemperatureSchedule = None,
                 noun: bool = True, verb: bool = True):
        super().__init__()
        self.egonce = EgoNCE(temperature=temperature, noun=noun, verb=verb)
        self.temperature_scheduler = (None if temperature_schedule is None else _build_from_dict(
            CosineTemperatureScheduler, temperature_schedule, 'temperature_schedule', type(self).__name__))
        self.derives_total_steps = temperature_schedule is not None and 'total_steps' not in temperature_schedule

    def set_total_steps(self, total_steps: int) -> None:
        """Length of the temperature schedule in optimizer steps, unless the config gave ``total_steps``.

        Call it before loading a checkpoint, so that a resumed run keeps the schedule it saved.
        """
        if self.derives_total_steps:
            self.temperature_scheduler.set_total_steps(total_steps)

    def current_temperature(self, step):
        """EgoNCE temperature at optimizer step ``step``."""
        if self.temperature_scheduler is None:
            return self.egonce.temperature
        return self.temperature_scheduler.set_step(step)

    def temporal_term(self, video_embeds, temporal_pairs, scale_embeds, epoch, total_epochs):
        """``(loss, weight, num_pairs)`` added to EgoNCE as ``weight * loss``; none here: ``num_pairs`` counts the
        batch's temporal pairs."""
        num_pairs = 0 if temporal_pairs is None else len(temporal_pairs)
        return torch.zeros((), dtype=torch.float32, device=video_embeds.device), 0.0, num_pairs

    def forward(self, text_embeds, video_embeds, verb_vec=None, noun_vec=None, temporal_pairs=None,
                scale_embeds=None, step=0, epoch=0, total_epochs=1):
        """Returns ``(total_loss, components)``.

        text_embeds, video_embeds: [b, D] local batch (not normalised; any float dtype);
        verb_vec [b, V], noun_vec [b, C]: multi-hot tags; temporal_pairs: [P, 3] rows
        (i, j, dt) of local positions; scale_embeds: {scale: [b, D]}; step: optimizer step
        (temperature schedule); epoch: 0-based, of total_epochs (lambda schedule).
        components: 'egonce', 'temporal' (detached float32 tensors), 'lambda',
        'temperature' (floats), 'num_pairs' (int).
        """
        if text_embeds.shape[0] != video_embeds.shape[0]:
            raise ValueError(f"{type(self).__name__}: {text_embeds.shape[0]} text embeddings but "
                             f"{video_embeds.shape[0]} video embeddings")
        device = video_embeds.device
        temperature = self.current_temperature(step)
        with torch.autocast(device_type=device.type, enabled=False):
            sizes = gather_batch_sizes(video_embeds.shape[0], device)
            text = F.normalize(all_gather_with_grad(text_embeds, sizes).float(), dim=-1)
            video = F.normalize(all_gather_with_grad(video_embeds, sizes).float(), dim=-1)
            verbs, nouns = (_gather_tags(vec, sizes, device) for vec in (verb_vec, noun_vec))
            egonce = self.egonce(text @ video.t(), verbs, nouns, temperature=temperature)
            temporal, weight, num_pairs = self.temporal_term(video_embeds, temporal_pairs, scale_embeds, epoch,
                                                             total_epochs)
            total = egonce + weight * temporal if weight > 0 and num_pairs > 0 else egonce
        components = {'egonce': egonce.detach(), 'temporal': temporal.detach(), 'lambda': weight,
                      'temperature': float(temperature), 'num_pairs': num_pairs}
        return total, components

    def get_extra_state(self):
        """Carried by ``state_dict()``: the temperature scheduler's state (None without one)."""
        return {'temperature_scheduler': None if self.temperature_scheduler is None
                else self.temperature_scheduler.state_dict()}

    def set_extra_state(self, state):
        saved = state.get('temperature_scheduler')
        if self.temperature_scheduler is None:
            if saved is not None:
                logger.warning("Checkpoint has a temperature schedule but this objective uses a fixed "
                               "temperature %s; the saved schedule is ignored", self.egonce.temperature)
            return
        if saved is None:
            logger.warning("Checkpoint has no temperature schedule; the configured one starts from step %d",
                           self.temperature_scheduler.current_step)
            return
        self.temperature_scheduler.load_state_dict(saved)


@LOSSES.register()
class EgoNCEObjective(ScheduledEgoNCE):
    """Baseline objective: EgoNCE with a fixed or scheduled temperature, no temporal term (see ScheduledEgoNCE)."""


@LOSSES.register('MultiScaleEgoNCE', 'EnhancedEgoNCEWithTemporal')
class MultiScaleEgoNCE(ScheduledEgoNCE):
    """EgoNCE on the global batch + lambda * temporal consistency on the local batch.

    ``total = egonce + lambda * temporal`` with the effective weight
    ``lambda = consistency_weight * temporal_loss.lambda_at(epoch, total_epochs)``:
    the ``temporal`` dict's lambda_start/lambda_end give the schedule's shape and
    ``consistency_weight`` (``--cw``) scales it; ``consistency_weight=0`` is plain EgoNCE
    (the temporal term is then not computed). Components report ``lambda`` as this product
    and ``num_pairs`` as the pairs within ``max_time_gap``.

    Args:
        consistency_weight: multiplier of the temporal term (>= 0).
        temperature, temperature_schedule, noun, verb: as in ScheduledEgoNCE.
        temporal: None (defaults) or ``TemporalConsistencyLoss`` args, including
            'embeddings': 'fused' | 'per_scale' | 'cross_scale'.

    The temporal term uses only the local batch (pairs index local positions); under DDP
    its gradient is the mean over ranks of the local temporal gradients.
    """

    def __init__(self, consistency_weight: float = 0.1, temperature: float = 0.05,
                 temperature_schedule: TemperatureSchedule = None, noun: bool = True, verb: bool = True,
                 temporal: Annotated[dict | None, ArgsOf(TemporalConsistencyLoss)] = None):
        super().__init__(temperature=temperature, temperature_schedule=temperature_schedule, noun=noun, verb=verb)
        if consistency_weight < 0:
            raise ValueError(f"MultiScaleEgoNCE: consistency_weight must be >= 0, got {consistency_weight}")
        self.consistency_weight = float(consistency_weight)
        self.temporal_loss = _build_from_dict(TemporalConsistencyLoss, temporal or {}, 'temporal', 'MultiScaleEgoNCE')

    def temporal_term(self, video_embeds, temporal_pairs, scale_embeds, epoch, total_epochs):
        """``(temporal loss, consistency_weight * lambda_at(epoch), pairs within max_time_gap)``."""
        device = video_embeds.device
        weight = self.consistency_weight * self.temporal_loss.lambda_at(epoch, total_epochs)
        pairs = (torch.zeros((0, 2), dtype=torch.long, device=device) if temporal_pairs is None
                 else self.temporal_loss.valid_pairs(temporal_pairs, video_embeds.shape[0], device=device))
        if weight > 0 and pairs.shape[0] > 0:
            temporal = self.temporal_loss.loss_on_pairs(video_embeds, pairs, scale_embeds)
        else:
            temporal = torch.zeros((), dtype=torch.float32, device=device)
        return temporal, weight, int(pairs.shape[0])


EnhancedEgoNCEWithTemporal = MultiScaleEgoNCE
