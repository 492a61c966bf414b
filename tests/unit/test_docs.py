"""Documentation that is derived from arches/ must match it."""
import configparser
import re

from mmap2conf import docs
from mmap2conf.model import REPO, load_all


def test_the_readme_configuration_table_is_current():
    assert docs.render(docs.README.read_text()) == docs.README.read_text(), \
        "run python3 -m mmap2conf.docs"


def test_tox_has_an_environment_for_every_configuration_and_tag():
    configs = load_all()
    tox = configparser.ConfigParser()
    tox.read(REPO / "tox.ini")
    env_list = {name.strip() for name in tox["tox"]["env_list"].split(",")}
    assert env_list == set(configs) | {"unit"}
    generative = next(s for s in tox.sections() if s.startswith("testenv:{"))
    tags = set(re.fullmatch(r"testenv:\{(.*)\}", generative).group(1).split(","))
    assert tags == {tag for config in configs.values() for tag in config.tags}
