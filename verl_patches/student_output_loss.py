"""A seam in verl 0.9.1's FSDP actor engine: a loss computed from the student's own output.

verl's ``verl/workers/engine/fsdp/transformer_impl.py::FSDPEngineWithLMHead.forward_step`` runs the model, turns
its logits into log-probs / entropy / top-k distillation outputs (``prepare_model_outputs``) and hands those
to the loss function. A distillation loss over the full vocabulary needs none of them: it needs the student's
temperature-scaled logits ``[nnz, V]``, or — to never form them — its final hidden states ``[nnz, H]`` and the
LM-head weight. verl 0.9.1 has no seam for that (its top-k distillation seam calls the loss function a second
time, as a logits processor, and still hands it logits). This patch adds one, for a loss function that says so:

- ``loss_function.student_output`` — ``"logits"`` or ``"hidden"``: what the loss reads;
- ``loss_function.student_forward(module)`` — a context manager entered around verl's forward step (the
  recipe's ``"hidden"`` loss makes the LM head return its input there and records its weight:
  ``recipe/atesd/method/scoring.py::hidden_states_as_logits``).

For such a loss, ``prepare_model_outputs`` returns ``{"student_<student_output>": x}``: the model's last output
``[nnz, ·]`` divided by the per-token sampling temperature (verl's own ``_scale_logits_by_temperature``; it
commutes with the head, (h/τ)Wᵀ = (hWᵀ)/τ) with the packing pad removed (verl's ``_gather_and_unpad_packed``),
and verl calls the loss once, as the loss, with that ``model_output``. Everything else of ``forward_step`` —
input packing, autocast, the loss call, the outputs — is verl's, unchanged; any other loss function takes
verl's path untouched. Both layouts: packed (``use_remove_padding``) and right-padded, whose rows are cut to each
sequence's length and concatenated in the packed order. Not for Ulysses sequence parallelism (the recipe's
config check refuses it).

Applied on every platform (not only CPU), by ``recipe/atesd/glue/worker.py`` when it is imported: in the
driver and in every Ray worker process that holds the ATESD worker.
"""

from contextlib import nullcontext

from verl_patches._guard import Target, already_patched, mark_patched, verify

FORWARD_STEP = Target(
    dist="verl",
    version="0.9.1",
    module="verl.workers.engine.fsdp.transformer_impl",
    attr="FSDPEngineWithLMHead.forward_step",
    source_sha="d2fa75d4cdf92cca",
)
PREPARE_OUTPUTS = Target(
    dist="verl",
    version="0.9.1",
    module="verl.workers.engine.fsdp.transformer_impl",
    attr="FSDPEngineWithLMHead.prepare_model_outputs",
    source_sha="384ab09aab7bfd49",
)
OUTPUTS = ("logits", "hidden")


def wants_student_output(loss_function) -> str | None:
    """``"logits"`` / ``"hidden"`` for a loss that uses this seam, else None (verl's own path)."""
    kind = getattr(loss_function, "student_output", None)
    if kind is not None and kind not in OUTPUTS:
        raise ValueError(
            f"{type(loss_function).__name__}.student_output = {kind!r}: expected one of {OUTPUTS}"
        )
    return kind


def apply() -> None:
    """Install the seam on ``FSDPEngineWithLMHead`` (idempotent; PatchTargetError on another verl)."""
    from verl.workers.engine.fsdp import transformer_impl as impl

    patch_class(impl.FSDPEngineWithLMHead, impl)


def patch_class(engine, impl) -> None:
    """Replace ``engine``'s two methods by the seam's (``impl``: verl's transformer_impl module)."""
    if already_patched(engine.forward_step):
        return
    verify(FORWARD_STEP)
    verify(PREPARE_OUTPUTS)
    original_step, original_outputs = engine.forward_step, engine.prepare_model_outputs

    def forward_step(self, micro_batch, loss_function, forward_only):
        if wants_student_output(loss_function) is None:
            return original_step(self, micro_batch, loss_function, forward_only)
        with (
            loss_function.student_forward(self.module)
            if hasattr(loss_function, "student_forward")
            else nullcontext()
        ):
            return original_step(self, micro_batch, loss_function, forward_only)

    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        kind = wants_student_output(logits_processor_func)
        if kind is None:
            return original_outputs(self, output, output_args, micro_batch, logits_processor_func)
        unit = output_args.get("temperature_is_one", False)
        if impl.tu.get_non_tensor_data(data=micro_batch, key="use_remove_padding", default=True):
            # packed: [nnz + pad, V] logits, or [nnz + pad, H] hidden states inside student_forward
            student = output.logits.squeeze(0)
            student = impl._scale_logits_by_temperature(
                student, output_args["temperature_rmpad"].unsqueeze(-1), is_unit_temperature=unit
            )
            student = self._gather_and_unpad_packed(student, output_args["pad_size"])
        else:  # right-padded [bsz, max_len, ·]: each sequence's first len_i rows, concatenated as packed
            scaled = impl._scale_logits_by_temperature(
                output.logits,
                output_args["temperature"].unsqueeze(-1).unsqueeze(-1),
                is_unit_temperature=unit,
            )
            lengths = micro_batch["input_ids"].offsets().diff().tolist()
            student = impl.torch.cat([row[:n] for row, n in zip(scaled, lengths, strict=True)])
        return {f"student_{kind}": student}

    engine.forward_step = mark_patched(forward_step)
    engine.prepare_model_outputs = mark_patched(prepare_model_outputs)
