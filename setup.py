"""Packaging for pypicache, a caching proxy and private index for Python packages."""

from setuptools import find_packages, setup

setup(
    name="pypicache",
    version="0.1.0.dev0",
    description="A caching proxy and private index for Python packages (a twistd plugin).",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.10",
    # A flat layout: package_dir keeps twisted/plugins/ visible to twistd after an
    # editable install as well as after a regular one.
    package_dir={"": "."},
    packages=find_packages(include=["pypicache", "pypicache.*"]) + ["twisted.plugins"],
    package_data={
        "twisted.plugins": ["pypicache_plugin.py"],
        # The web interface's templates, stylesheet, script and icon.
        "pypicache.web.ui": ["templates/*.html", "static/*"],
    },
    install_requires=[
        "Twisted[tls]>=24.7",
        "prometheus-client>=0.17",
        "klein>=24.8",
        "treq>=24.9",
        "attrs>=23.1",
        "packaging>=24.0",
        "pkginfo>=1.10",
        "multipart>=1.2",
        "pip>=23.0",
        "bcrypt>=4.0",
        "resolvelib>=1.0",
        "pip-requirements-parser>=32",
        "tomli>=1.1; python_version < '3.11'",
        # Progress bars of pypicache-admin (cleanup, verify, export, import).
        "tqdm>=4.60",
        # The web interface: templates with autoescaping, and long descriptions
        # rendered and sanitized as the public index does (Markdown too).
        "Jinja2>=3.1",
        "readme_renderer[md]>=43",
        # S3-compatible object storage (pypicache/storage/s3/): signing and
        # the S3 protocol; 1.36 has conditional writes (If-Match and
        # If-None-Match on PutObject and CompleteMultipartUpload) and the
        # request checksum setting.
        "botocore>=1.36",
        # Large pages' JSON (a 3,000-file page's answer and its stored
        # file) made in a tenth of json.dumps's time, the same bytes
        # (pypicache/index/jsonbytes.py).
        "orjson>=3.8",
    ],
    entry_points={
        "console_scripts": [
            "pypicache-import = pypicache.private.importer:run",
            "pypicache-admin = pypicache.tap.admin:run",
        ]
    },
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            # Runs the suite on every core (pytest.ini: -n auto): most of its
            # time is spent waiting on pip, uv, twine and twistd subprocesses.
            "pytest-xdist>=3.6",
            "uv>=0.4",
            "twine>=6",
            "build>=1.0",
            # Property-based fuzzing of the parsers (tests/test_fuzz.py).
            "hypothesis>=6.100",
            # The web interface in a real browser (tests/test_ui_browser.py).
            "selenium>=4.20",
            # moto's standalone S3 server on loopback (tests/s3server.py).
            "moto[server]>=5.1",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Archiving :: Mirroring",
    ],
)
