"""Self-contained HTML reports (`planner report`): Plotly charts with plotly.js inlined once.

page (the document), schedule (the pipeline timeline behind the Gantt chart), training (a
training task's comparison, breakdown, schedule and memory), sweep (a sweep result's Pareto front).
"""
