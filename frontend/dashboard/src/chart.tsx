// A time-series chart (uPlot) that fills its container's width.

import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface Series {
  label: string;
  color: string;
  values: (number | null)[];
  dash?: number[];
  /** Draw as steps (counts that change at a moment). */
  stepped?: boolean;
}

export function Chart(props: { title: string; unit: string; times: number[]; series: Series[]; testId: string }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = props.series.map((s) => s.label).join('|');

  useEffect(() => {
    const el = box.current!;
    const options: uPlot.Options = {
      width: Math.max(280, el.clientWidth),
      height: 200,
      legend: { show: true },
      cursor: { points: { size: 6 } },
      scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
      axes: [
        { stroke: '#333', grid: { stroke: '#e3e3e3' } },
        { stroke: '#333', grid: { stroke: '#e3e3e3' }, label: props.unit, size: 50 },
      ],
      series: [
        { label: 'time' },
        ...props.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          dash: s.dash,
          points: { show: true, size: 4 },
          paths: s.stepped ? uPlot.paths.stepped!({ align: 1 }) : undefined,
        })),
      ],
    };
    plot.current = new uPlot(options, [props.times, ...props.series.map((s) => s.values)] as uPlot.AlignedData, el);
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(280, el.clientWidth), height: 200 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [shape]);

  useEffect(() => {
    plot.current?.setData([props.times, ...props.series.map((s) => s.values)] as uPlot.AlignedData);
  }, [props.times, props.series]);

  return (
    <figure class="chart" data-testid={props.testId} data-points={props.times.length}>
      <figcaption>{props.title}</figcaption>
      <div ref={box} role="img" aria-label={`${props.title}: ${props.times.length} observations`} />
    </figure>
  );
}
