"""AltPO, Alternate Preference Optimization (Mekala et al., arXiv 2409.13474; COLING 2025).

IdkDPO's loss (:func:`alignkit.losses.altpo_loss`, an alias of ``idk_dpo_loss``) with the "I don't
know" answer replaced by alternate answers the target model writes itself before training:
``L = mean_rows (2/β)·softplus(−β·[(S_alt − S_alt,ref) − (S_ans − S_ans,ref)])``, plus the retain
term (spec ``methods-unlearning-2.md`` §7; defaults of open-unlearning's ``community/methods/AltPO``).

The alternates are drawn once, offline, with the shared sampler (:mod:`alignkit.sampling`): K per
question (5), temperature 1.0, ``max_new_tokens`` 200, ``top_p=1.0, top_k=0`` set explicitly (upstream
inherits the checkpoint's generation config), one seed. The request is alignkit's own instruction
rendered through the run's ``PromptFormat``, the assistant turn pre-filled with an answer tag; see
:mod:`alignkit.trainers.alternates`. They are cached in the sampler cache and written to the run folder
(``altpo_alternates.json``, copied into every checkpoint): a re-run or a resumed run reads them back and
never generates again; a run folder holding other alternates is an error, never silently regenerated.
``alternates_file`` trains on alternates made elsewhere (e.g. open-unlearning's ``alt5_seed_0.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

from alignkit.data.records import normalize_record
from alignkit.losses import altpo_loss
from alignkit.sampling import gathered_parameters, model_fingerprint
from alignkit.trainers import alternates as alt
from alignkit.trainers import checkpoints
from alignkit.trainers.idk_dpo import ForgetDPOConfig, IdkDPOTrainer, with_chosen
from alignkit.trainers.registry import register
from alignkit.trainers.self_samples import SelfSampleStep, draw_from_starting_weights, sampling_fields

logger = logging.getLogger(__name__)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]


def _never(_raw: str) -> bool:  # a user's file does not say which alternates hit a length limit
    return False


AltPOSampling = sampling_fields(
    count="num_alternates",
    prefix="alternate_",
    num_samples=5,
    max_new_tokens=200,
    batch_size=8,
    seed=0,
    notes={
        "num": "5, upstream",
        "temperature": "1.0, upstream",
        "top_p": "set explicitly, not from the checkpoint",
        "top_k": "set explicitly",
        "max_new_tokens": "200, upstream",
        "seed": "0, upstream's global seed",
    },
)


@dataclass
class AltPOConfig(ForgetDPOConfig, AltPOSampling):
    # > Parameters that control the generation of the alternates (spec §7(b), (d)): the sampling
    # fields (num_alternates, alternate_temperature/top_k/top_p/max_new_tokens/seed/batch_size,
    # sample_cache_dir) come from AltPOSampling.
    alternate_instruction: str = field(
        default=alt.DEFAULT_INSTRUCTION,
        metadata={"help": "The user turn of a request; must contain {question} and {answer}."},
    )
    alternate_answer_tag: str = field(
        default=alt.DEFAULT_ANSWER_TAG, metadata={"help": "Text the assistant turn is pre-filled with."}
    )
    alternate_stop_strings: list[str] = field(
        default_factory=lambda: list(alt.DEFAULT_STOP_STRINGS),
        metadata={"help": "An alternate is cut at the first of these, then stripped."},
    )
    drop_alternates: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Optional filter (off by default, as upstream): any of empty, identical, truncated."
        },
    )
    alternates_file: str | None = field(
        default=None,
        metadata={
            "help": "Ready alternates (JSON list of {question, answer, alternate}, e.g. alt5_seed_0.json)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        try:
            self.alternate_instruction.format(question="q", answer="a")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"`alternate_instruction` must contain only the fields {{question}} and {{answer}} "
                f"(write a literal brace as {{{{ or }}}}): {error!r}."
            ) from None
        for kind in self.drop_alternates:
            if kind not in alt.DROP_KINDS:
                raise ValueError(f"`drop_alternates` takes {', '.join(alt.DROP_KINDS)}; got {kind!r}.")
        self.sampling_settings()  # validates the sampling fields, naming the bad one


@register(
    "altpo",
    family="unlearning",
    data="single",
    tags=("altpo",),
    summary="DPO with the model's own alternate answers as chosen (AltPO)",
)
class AltPOTrainer(IdkDPOTrainer):
    config_class = AltPOConfig
    paper = {
        "title": "Alternate Preference Optimization for Unlearning Factual Knowledge in Large Language Models",
        "id": "2409.13474",
    }
    loss_fn = staticmethod(altpo_loss)
    _encoding_train = False

    def __init__(self, model, args: AltPOConfig | None = None, *a, **kw):
        # The starting weights write the alternates (before any PEFT wrapping), during the encoding.
        args = args if args is not None else AltPOConfig(output_dir="runs/altpo")
        if kw.get("eval_dataset") is not None or len(a) >= 2 and a[1] is not None:
            raise ValueError(
                "AltPOTrainer: `eval_dataset` is not supported (its rows would need their own alternates); "
                "evaluate the saved model with `alignkit eval tofu` instead."
            )
        if isinstance(args, AltPOConfig):  # a wrong type is reported by the base class
            model = self._load_model(model, args)
        self._generator = model
        super().__init__(model, args, *a, **kw)
        del self._generator

    def transform_row(self, row: dict, index: int):
        """Training row ``index`` (a forget row repeated once per alternate): its alternate as chosen."""
        if not self._encoding_train:  # e.g. rows passed to `evaluate()`: they have no alternates
            raise ValueError(
                "AltPOTrainer: only the training rows have alternates; evaluate the saved model with "
                "`alignkit eval tofu` instead."
            )
        record = normalize_record(row, index=index, source="train_dataset")
        return with_chosen(record, self.alternates[index]["alternate"])

    def _encode(self, data, name: str, args, transform=None):
        if name != "train_dataset":
            return super()._encode(data, name, args, transform)
        rows = self._alternate_rows(data, args)
        self._encoding_train = True
        try:
            return super()._encode(rows, name, args, transform)
        finally:
            self._encoding_train = False

    # ------------------------------------------------------------------ alternates
    def _alternate_rows(self, data, args: AltPOConfig) -> list[dict]:
        """The training rows: each forget row once per alternate, through the self-sample step (the run
        folder's alternates, else the sampler cache's or a new draw; or a user's file)."""
        qas = alt.forget_questions(data, on_invalid=args.on_invalid)
        settings, tokenizer = args.sampling_settings(), self.collator.tokenizer
        post = [args.alternate_stop_strings, sorted(args.drop_alternates)]
        if args.alternates_file:
            given: list[list[str]] = [[] for _ in qas]
            for row in alt.match_rows(
                alt.read_alternates_file(args.alternates_file), qas, args.alternates_file
            ):
                given[row["forget_index"]].append(row["alternate"])
            stop_strings, hit_limit = (), _never  # a file's alternates are final
        else:
            ids = [
                alt.request_ids(self.collator, qa, args.alternate_instruction, args.alternate_answer_tag, i)
                for i, qa in enumerate(qas)
            ]
            stop_strings = args.alternate_stop_strings

            def hit_limit(raw: str) -> bool:
                # Re-tokenised (the sampler returns text): a completion that ran to the limit has no EOS.
                return len(tokenizer(raw, add_special_tokens=False)["input_ids"]) >= settings.max_new_tokens

        def label(completions):
            kept, counts = alt.post_process(
                qas, completions, stop_strings=stop_strings, drop=args.drop_alternates, hit_limit=hit_limit
            )
            return kept, [], counts

        step = SelfSampleStep(
            "AltPO",
            settings,
            cache_dir=args.sample_cache_dir,
            label=label,
            store=alt.AlternatesStore(qas),
            warn_on=alt.DROP_KINDS,  # flagged alternates are shown (a warning), as the spec asks
        )
        newest, _ = checkpoints.newest_complete(args.output_dir)
        where = dict(output_dir=args.output_dir, newest_checkpoint=newest, should_save=args.should_save)
        if args.alternates_file:
            key = "file-" + _digest([given, post])
            samples = step.obtain(
                key, lambda: (given, [], {"source": args.alternates_file}), use_cache=False, **where
            )
        else:
            with gathered_parameters(self._generator):  # ZeRO-3 shards: hash the whole weights, every rank
                fingerprint = model_fingerprint(self._generator)
            # The key covers the post-processing too: the cache holds the alternates as trained on.
            key = step.cache_key(
                models=[fingerprint], data=ids, method="altpo", eos=tokenizer.eos_token_id, post=post
            )
            samples = step.obtain(key, lambda: self._draw(ids, settings, args), **where)
        rows = alt.rows_of(qas, samples.completions)
        if not rows:
            raise ValueError(
                f"AltPO: every alternate was dropped (drop_alternates={args.drop_alternates}); loosen the "
                "filter or raise alternate_max_new_tokens."
            )
        self.sample_step, self.alternates, self.alternates_meta = step, rows, samples.meta
        return [qas[r["forget_index"]].row for r in rows]

    def _draw(self, ids, settings, args: AltPOConfig):
        """K raw completions per request, and the record of how they were made."""
        tokenizer = self.collator.tokenizer
        logger.info(
            "AltPO: generating %d alternates per question for %d questions (once; cached after)",
            settings.num_samples,
            len(ids),
        )
        result = draw_from_starting_weights(
            self._generator,
            tokenizer,
            ids,
            settings,
            device=args.device,
            show_progress=not args.disable_tqdm,
            desc="AltPO alternates",
        )
        meta = {
            "seconds": result.seconds,
            "instruction": args.alternate_instruction,
            "answer_tag": args.alternate_answer_tag,
            "stop_strings": list(args.alternate_stop_strings),
            "sampling": {
                **settings.fingerprint(),
                "do_sample": True,
                "backend": "generate (seeded Gumbel-max)",
            },
            "requests": [tokenizer.decode(i) for i in ids],  # the rendered request of each question
        }
        return result.completions, [[] for _ in result.completions], meta

    # ------------------------------------------------------------------ checkpoints
    def _save_extra_state(self, folder: str) -> None:
        if self.args.should_save:
            self.sample_step.save(folder)

    def _load_extra_state(self, folder: str) -> None:
        self.sample_step.check(folder)

    def train(self, resume_from_checkpoint=None, **kwargs):
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        for kind, count in self.alternates_meta["counts"].items():
            output.metrics[f"alternates_{kind}"] = count
        return output
