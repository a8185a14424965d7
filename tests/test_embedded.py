"""The embedded default: a clean tiny CLIP that classifies digits zero-shot, and a working backdoor."""

from hf_tbar import BackdoorUnlearner


def test_clean_model_is_accurate_and_not_backdoored(badnets_scenario):
    sc = badnets_scenario
    clean = BackdoorUnlearner(sc.clean_path, task=sc.task).evaluate(*sc.test, sc.trigger, sc.target)
    assert clean.clean_accuracy >= 0.90
    assert clean.attack_success_rate <= 0.05


def test_backdoored_model_obeys_the_trigger_and_keeps_clean_accuracy(badnets_scenario):
    sc = badnets_scenario
    clean = BackdoorUnlearner(sc.clean_path, task=sc.task).evaluate(*sc.test)
    backdoored = BackdoorUnlearner(sc.backdoored_path, task=sc.task).evaluate(*sc.test, sc.trigger, sc.target)
    assert backdoored.attack_success_rate >= 0.95
    assert backdoored.clean_accuracy >= clean.clean_accuracy - 0.03
