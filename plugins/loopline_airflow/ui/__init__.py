"""The "Model loop" page and API in the Airflow UI.

``render`` turns the loop state (``loopline.status.loop_state``) into one self-contained HTML
page (a pure function); ``app`` is the FastAPI app the plugin mounts at ``/loopline`` behind Airflow's
own authentication. Both import nothing heavy at module level: the plugin costs nothing at start.
"""
