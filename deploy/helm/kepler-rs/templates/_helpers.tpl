{{/* Names and labels, as in the prometheus-community exporter charts. */}}
{{- define "kepler-rs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kepler-rs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kepler-rs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kepler-rs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kepler-rs.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kepler-rs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: exporter
app.kubernetes.io/part-of: kepler-rs
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kepler-rs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kepler-rs.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kepler-rs.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The only capabilities the exporter may hold (deploy/README.md, "Security"):
  DAC_READ_SEARCH  read RAPL energy_uj (root-only since Linux 5.10) and other users' /proc entries
  BPF, PERFMON     load and attach the eBPF CPU-accounting programs (--cpu-source auto|ebpf) and
                   open the CPU-wide cycles/instructions counters they read (--cpu-counters auto)
*/}}
{{- define "kepler-rs.capabilities" -}}
{{- $caps := list "DAC_READ_SEARCH" -}}
{{- if has .Values.exporter.cpuSource (list "auto" "ebpf") -}}
{{- $caps = concat (list "BPF" "PERFMON") $caps -}}
{{- end -}}
{{- toYaml $caps -}}
{{- end -}}

{{- define "kepler-rs.gpuEnabled" -}}
{{- if and .Values.gpu.mode (ne .Values.gpu.mode "off") -}}true{{- end -}}
{{- end -}}
