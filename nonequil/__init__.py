"""nonequil: Langevin/OU diffusion chains on Numba CPU and CUDA kernels, checked against
exact thermodynamics.

The public API is re-exported lazily (module-level ``__getattr__``) so that
``import nonequil`` and ``nonequil --help`` stay fast: nothing heavy (numba, scipy, h5py)
is imported until an attribute that needs it is used.
"""
__version__ = "0.1.0"

_EXPORTS = {
    # simulation
    "simulate": ("nonequil.simulate", "simulate"),
    "SimulationConfig": ("nonequil.simulate", "SimulationConfig"),
    "PROCESSES": ("nonequil.processes", "PROCESSES"),          # forward diffusion processes
    "SIMULATE_PROCESSES": ("nonequil.simulate", "PROCESSES"),  # ou, langevin, underdamped
    "schedules": ("nonequil.schedules", None),
    "processes": ("nonequil.processes", None),
    "POTENTIALS": ("nonequil.potentials", "POTENTIALS"),
    "InputError": ("nonequil.errors", "InputError"),
    # storage
    "read_samples": ("nonequil.store", "read_samples"),
    "describe": ("nonequil.store", "describe"),
    # datasets
    "datasets": ("nonequil.datasets", None),
    "GENERATORS": ("nonequil.datasets", "GENERATORS"),
    "generate_dataset": ("nonequil.datasets", "generate"),
    "write_dataset": ("nonequil.datasets", "write_dataset"),
    # score models and training
    "train": ("nonequil.train", "train"),
    "TrainConfig": ("nonequil.train", "TrainConfig"),
    "MLPScoreModel": ("nonequil.models", "MLPScoreModel"),
    "load_model": ("nonequil.models", "load"),
    "IsingExactDenoiser": ("nonequil.ising_exact", "IsingExactDenoiser"),
    # reverse samplers and likelihood
    "sample": ("nonequil.samplers", "sample"),
    "SAMPLERS": ("nonequil.samplers", "SAMPLERS"),
    "ode_likelihood": ("nonequil.likelihood", "ode_likelihood"),
    "likelihood": ("nonequil.likelihood", None),       # modules: from nonequil import reweight
    "nll": ("nonequil.likelihood", "likelihood"),
    "elbo": ("nonequil.likelihood", "elbo"),
    "reweight": ("nonequil.reweight", None),
    "reweight_to_analytic": ("nonequil.reweight", "reweight_to_analytic"),
    "sample_log_density": ("nonequil.reweight", "sample_log_density"),
    "train_gan": ("nonequil.gan_train", "train_gan"),
    "GANConfig": ("nonequil.gan", "GANConfig"),
    "GANModel": ("nonequil.gan", "GANModel"),
    "load_gan": ("nonequil.gan", "load"),
    "gan_theory": ("nonequil.gan_theory", None),
    # analytic thermodynamics and metrics (modules)
    "analytic": ("nonequil.analytic", None),
    "metrics": ("nonequil.metrics", None),
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    try:
        module_name, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'nonequil' has no attribute {name!r}") from None
    import importlib

    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__
