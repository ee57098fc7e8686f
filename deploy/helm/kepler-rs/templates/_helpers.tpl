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
{{- $ref := printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- with .Values.image.digest -}}
{{- $ref = printf "%s@%s" $ref . -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/*
The only capabilities the exporter may hold (deploy/README.md, "Security"). The container runs as
uid 0, which already owns the root-only files it reads (RAPL energy_uj, /proc/<pid>), so it needs no
DAC capability; where its values never load eBPF it holds none at all.
  BPF, PERFMON  load and attach the eBPF CPU-accounting programs and open the CPU-wide
                cycles/instructions counters they read: with --cpu-source ebpf, and with auto where
                it may load eBPF (process metrics on, or --cpu-counters auto|software: a PMU found
                at start makes auto load eBPF, and probing for one needs PERFMON)
*/}}
{{- define "kepler-rs.capabilities" -}}
{{- $e := .Values.exporter -}}
{{- if or (eq $e.cpuSource "ebpf") (and (eq $e.cpuSource "auto") (or $e.processMetrics (ne $e.cpuCounters "off"))) -}}
{{- toYaml (list "BPF" "PERFMON") -}}
{{- end -}}
{{- end -}}

{{- define "kepler-rs.gpuEnabled" -}}
{{- if and .Values.gpu.mode (ne .Values.gpu.mode "off") -}}true{{- end -}}
{{- end -}}

{{/* Whether the exporter serves HTTPS (web config with tls_server_config): probes and scrapes follow. */}}
{{- define "kepler-rs.https" -}}
{{- if and .Values.webConfig.enabled .Values.webConfig.tls -}}true{{- end -}}
{{- end -}}

{{- define "kepler-rs.webConfigSecret" -}}
{{- default (printf "%s-web-config" (include "kepler-rs.fullname" .)) .Values.webConfig.secretName -}}
{{- end -}}

{{- define "kepler-rs.tlsSecret" -}}
{{- default (printf "%s-tls" (include "kepler-rs.fullname" .)) .Values.webConfig.tlsSecretName -}}
{{- end -}}

{{/*
Host paths mounted into the container: read-only, and recursively so (submounts such as cgroupfs,
tracefs, bpffs, debugfs and efivarfs under /sys stay read-only too). Kubernetes requires
mountPropagation None with recursiveReadOnly.
*/}}
{{- define "kepler-rs.hostMountOptions" -}}
{{- if not (has .Values.host.recursiveReadOnly (list "IfPossible" "Enabled")) -}}
{{- fail "host.recursiveReadOnly must be IfPossible or Enabled: host mounts stay read-only all the way down" -}}
{{- end -}}
readOnly: true
recursiveReadOnly: {{ .Values.host.recursiveReadOnly }}
mountPropagation: None
{{- end -}}

{{/* The container's security context: the values' fields, never privileged, capabilities from the chart only. */}}
{{- define "kepler-rs.securityContext" -}}
{{- if .Values.securityContext.privileged -}}
{{- fail "securityContext.privileged cannot be true: the exporter needs no privileged mode (deploy/README.md, Security)" -}}
{{- end -}}
{{- if hasKey .Values.securityContext "capabilities" -}}
{{- fail "securityContext.capabilities is computed from exporter.cpuSource; it cannot be set" -}}
{{- end -}}
{{- toYaml .Values.securityContext }}
capabilities:
  drop: ["ALL"]
  {{- with include "kepler-rs.capabilities" . }}
  add:
    {{- . | nindent 4 }}
  {{- end }}
{{- end -}}
