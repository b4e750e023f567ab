"""Packaging: the coordination core, its drivers (entry points) and the Ryu integration."""

from pathlib import Path

from setuptools import find_packages, setup

ETCD = ["python3-etcd3>=0.13,<0.14", "protobuf>=5.29", "grpcio>=1.66", "requests>=2.31"]
#: A controller serves Prometheus metrics (ryu_integration.metrics).
METRICS = ["prometheus-client>=0.20"]
RYU = ["ryu==4.34", "eventlet>=0.35", "networkx>=3", *METRICS]
OS_KEN = ["os-ken>=4.2", "networkx>=3", *METRICS]
#: `coordctl serve`: the live page and JSON/HTTP API (ryu_integration.webview).
WEB = ["aiohttp>=3.9"]
#: selenium drives the system chromium in the web view's browser tests.
TEST = ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.5", "hypothesis>=6", "selenium>=4.10",
        *WEB]
#: What `make bench` compares against and draws with.
BENCH = ["tooz>=6", "matplotlib>=3.7"]

setup(
    name="sdn-coordination",
    version="0.1.0",
    description="Elections with fencing terms and a shared topology store for multi-controller "
    "Ryu / os-ken deployments, over ZooKeeper, etcd v3 or an embedded store",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["coordination*", "backends*", "ryu_integration*"]),
    # oslo.config: coordctl reads ryu.conf with the same loader as coord-manager.
    install_requires=["kazoo>=2.9", "stevedore>=5", "tenacity>=8", "oslo.config>=9"],
    package_data={"ryu_integration.webview": ["static/*.*", "static/vendor/*"]},
    extras_require={
        "zookeeper": [],
        "etcd": ETCD,
        "ryu": RYU,
        "os-ken": OS_KEN,
        "test": TEST,
        "bench": BENCH,
        "web": WEB,
        "all": sorted(set(ETCD + OS_KEN + TEST + WEB)),
    },
    entry_points={
        "coordination.backends": [
            "memory = backends.memory:MemoryCoordinator",
            "zookeeper = backends.zookeeper:ZooKeeperCoordinator",
            "embedded = backends.embedded:EmbeddedCoordinator",
            "etcd3 = backends.etcd:EtcdCoordinator",
            "example = backends.example:ExampleCoordinator",
        ],
        "console_scripts": [
            "coordctl = ryu_integration.cli:main",
            "coord-manager = ryu_integration.manager:main",
        ],
    },
)
