import logging

import pytest

from model.schedulers import CosineTemperatureScheduler


def test_temperature_hits_the_schedule_points():
    scheduler = CosineTemperatureScheduler(initial_temp=0.1, final_temp=0.01, total_steps=1000)
    assert scheduler.get_temperature(0) == pytest.approx(0.1)
    assert scheduler.get_temperature(500) == pytest.approx(0.055)
    assert scheduler.get_temperature(1000) == pytest.approx(0.01)
    assert scheduler.get_temperature(5000) == pytest.approx(0.01)
    assert scheduler.get_temperature(250) == pytest.approx(0.01 + 0.09 * (0.5 + 0.5 * 2 ** -0.5))


def test_temperature_decreases_monotonically():
    scheduler = CosineTemperatureScheduler(total_steps=50)
    values = [scheduler.get_temperature(step) for step in range(60)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_state_round_trip_continues_the_schedule():
    scheduler = CosineTemperatureScheduler(initial_temp=0.2, final_temp=0.02, total_steps=300)
    assert scheduler.set_step(120) == pytest.approx(scheduler.get_temperature(120))

    resumed = CosineTemperatureScheduler(initial_temp=0.2, final_temp=0.02, total_steps=300)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.current_step == 120
    assert resumed.temperature == scheduler.temperature
    assert resumed.state_dict() == scheduler.state_dict()


def test_saved_schedule_replaces_a_different_configured_one(caplog):
    saved = CosineTemperatureScheduler(initial_temp=0.2, final_temp=0.02, total_steps=300)
    saved.set_step(10)
    configured = CosineTemperatureScheduler()
    with caplog.at_level(logging.WARNING, logger='model.schedulers'):
        configured.load_state_dict(saved.state_dict())
    assert 'total_steps' in caplog.text
    assert configured.get_temperature(0) == pytest.approx(0.2)
    assert configured.get_temperature(300) == pytest.approx(0.02)


def test_bad_arguments_and_states_are_clear_errors():
    with pytest.raises(ValueError, match='total_steps'):
        CosineTemperatureScheduler(total_steps=0)
    with pytest.raises(ValueError, match='temperatures'):
        CosineTemperatureScheduler(final_temp=0.0)
    with pytest.raises(KeyError, match='current_step'):
        CosineTemperatureScheduler().load_state_dict({'initial_temp': 0.1})
