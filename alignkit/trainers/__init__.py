"""Trainers: the shared core and one Config + Trainer pair per method."""

from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.catnip import CATNIPConfig, CATNIPTrainer
from alignkit.trainers.config import AlignKitConfig, UnlearnConfig
from alignkit.trainers.dipo import DiPOConfig, DiPOTrainer
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.ga import GAConfig, GATrainer, GradDiffConfig, GradDiffTrainer
from alignkit.trainers.hamu import HAMUConfig, HAMUTrainer
from alignkit.trainers.idk_dpo import IdkDPOConfig, IdkDPOTrainer
from alignkit.trainers.npo import NPOConfig, NPOTrainer
from alignkit.trainers.pdu import PDUConfig, PDUTrainer
from alignkit.trainers.registry import METHODS, get_method
from alignkit.trainers.sft import FinetuneConfig, FinetuneTrainer
from alignkit.trainers.simnpo import SimNPOConfig, SimNPOTrainer

__all__ = [
    "METHODS",
    "AlignKitConfig",
    "AlignKitTrainer",
    "CATNIPConfig",
    "CATNIPTrainer",
    "DiPOConfig",
    "DiPOTrainer",
    "FinetuneConfig",
    "FinetuneTrainer",
    "ForwardOutput",
    "GAConfig",
    "GATrainer",
    "GradDiffConfig",
    "GradDiffTrainer",
    "HAMUConfig",
    "HAMUTrainer",
    "IdkDPOConfig",
    "IdkDPOTrainer",
    "NPOConfig",
    "NPOTrainer",
    "Needs",
    "PDUConfig",
    "PDUTrainer",
    "SimNPOConfig",
    "SimNPOTrainer",
    "UnlearnConfig",
    "get_method",
]
