"""Sequential Monte Carlo over tokens, and resampling with explicit uniforms."""

from parasample.smc import smc
from parasample.smc.resampling import RESAMPLERS, multinomial, stratified, systematic

__all__ = ["RESAMPLERS", "multinomial", "smc", "stratified", "systematic"]
