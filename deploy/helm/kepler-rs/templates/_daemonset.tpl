{{/*
One DaemonSet of the exporter. Called with (dict "root" $ "variant" V):
  ""     one DaemonSet for every node (no GPU runtime class)
  "cpu"  the nodes without the GPU label: no runtime class, GPU off
  "gpu"  the nodes with the GPU label (gpu.nodeLabel): RuntimeClass gpu.runtimeClassName, NVML
A mixed cluster gets "cpu" and "gpu" (daemonset.yaml): a runtime class that a node lacks would keep
the pod from starting there.
*/}}
{{- define "kepler-rs.daemonset" -}}
{{- $root := .root -}}
{{- $variant := .variant -}}
{{- with $root -}}
{{- $gpu := and (ne $variant "cpu") (include "kepler-rs.gpuEnabled" .) -}}
{{- $https := include "kepler-rs.https" . -}}
{{- $hashKey := and .Values.kubernetes.metadata (eq .Values.kubernetes.hubUserLabel "hash") -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ include "kepler-rs.fullname" . }}{{ if eq $variant "gpu" }}-gpu{{ end }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "kepler-rs.labels" . | nindent 4 }}
    {{- with $variant }}
    kepler-rs/nodes: {{ . }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "kepler-rs.selectorLabels" . | nindent 6 }}
      {{- with $variant }}
      kepler-rs/nodes: {{ . }}
      {{- end }}
  {{- with .Values.updateStrategy }}
  updateStrategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "kepler-rs.labels" . | nindent 8 }}
        {{- with $variant }}
        kepler-rs/nodes: {{ . }}
        {{- end }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "kepler-rs.serviceAccountName" . }}
      automountServiceAccountToken: {{ and .Values.kubernetes.metadata .Values.serviceAccount.automountToken }}
      # Host PIDs: cgroup and /proc entries of every process on the node.
      hostPID: true
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- if ne $variant "cpu" }}
      {{- with .Values.gpu.runtimeClassName }}
      runtimeClassName: {{ . }}
      {{- end }}
      {{- end }}
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      containers:
        - name: kepler-rs
          image: {{ include "kepler-rs.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args:
            - run
            - --listen=0.0.0.0:{{ .Values.exporter.port }}
            - --sysfs=/host/sys
            - --procfs=/host/proc
            - --interval={{ .Values.exporter.interval }}
            - --grace-period={{ .Values.exporter.gracePeriod }}
            - --energy-source={{ .Values.exporter.energySource }}
            - --cpu-source={{ .Values.exporter.cpuSource }}
            - --cpu-counters={{ .Values.exporter.cpuCounters }}
            - --log-format={{ .Values.exporter.logFormat }}
            - --log-level={{ .Values.exporter.logLevel }}
            - --web.max-connections={{ .Values.exporter.maxConnections }}
            {{- if .Values.exporter.processMetrics }}
            - --process-metrics
            {{- end }}
            {{- if and .Values.exporter.metricsCompat (ne (toString .Values.exporter.metricsCompat) "off") }}
            - --metrics-compat={{ .Values.exporter.metricsCompat }}
            {{- end }}
            {{- with .Values.exporter.idleWatts }}
            - --idle-watts={{ . }}
            {{- end }}
            {{- if .Values.kubernetes.metadata }}
            {{- range .Values.kubernetes.jupyterhubNamespaces }}
            - --jupyterhub-namespace={{ . }}
            {{- end }}
            - --hub-user-label={{ .Values.kubernetes.hubUserLabel }}
            {{- if $hashKey }}
            - --hub-user-hash-key-file=/etc/kepler-rs/hub-user-hash/{{ .Values.kubernetes.hubUserHashKey.key }}
            {{- end }}
            {{- end }}
            {{- if .Values.webConfig.enabled }}
            - --web.config.file=/etc/kepler-rs/web/{{ .Values.webConfig.fileName }}
            {{- end }}
            {{- with .Values.exporter.extraArgs }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            {{- if not .Values.kubernetes.metadata }}
            # --no-kube: no pod names from the API server (pods carry pod_id only)
            - name: KEPLER_RS_NO_KUBE
              value: "true"
            {{- end }}
            {{- if eq $variant "cpu" }}
            # --gpu: nodes without the GPU label have no NVML to look for.
            - name: KEPLER_RS_GPU
              value: "off"
            {{- else }}
            {{- with .Values.gpu.mode }}
            # --gpu: GPU energy through NVML (auto | off | nvml)
            - name: KEPLER_RS_GPU
              value: {{ . | quote }}
            {{- end }}
            {{- end }}
            {{- if $gpu }}
            - name: KEPLER_RS_POD_RESOURCES_SOCKET
              value: /var/lib/kubelet/pod-resources/kubelet.sock
            # The NVIDIA runtime injects NVML (the driver's management library, no compute) only into
            # containers that ask for it; without these the GPU series silently vanish.
            - name: NVIDIA_VISIBLE_DEVICES
              value: all
            - name: NVIDIA_DRIVER_CAPABILITIES
              value: utility
            {{- end }}
            {{- with .Values.exporter.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: metrics
              containerPort: {{ .Values.exporter.port }}
              protocol: TCP
          {{- range $probe := list "livenessProbe" "readinessProbe" }}
          {{- with index $root.Values $probe }}
          {{- $spec := deepCopy . }}
          {{- if and $https $spec.httpGet }}
          {{- $_ := set $spec.httpGet "scheme" "HTTPS" }}
          {{- end }}
          {{ $probe }}:
            {{- toYaml $spec | nindent 12 }}
          {{- end }}
          {{- end }}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          securityContext:
            {{- include "kepler-rs.securityContext" . | nindent 12 }}
          volumeMounts:
            - name: proc
              mountPath: /host/proc
              {{- include "kepler-rs.hostMountOptions" . | nindent 14 }}
            - name: sys
              mountPath: /host/sys
              {{- include "kepler-rs.hostMountOptions" . | nindent 14 }}
            {{- if $gpu }}
            # A UNIX socket on a read-only mount can still be connected to.
            - name: pod-resources
              mountPath: /var/lib/kubelet/pod-resources
              {{- include "kepler-rs.hostMountOptions" . | nindent 14 }}
            {{- end }}
            {{- if .Values.webConfig.enabled }}
            - name: web-config
              mountPath: /etc/kepler-rs/web
              readOnly: true
            {{- end }}
            {{- if $hashKey }}
            - name: hub-user-hash-key
              mountPath: /etc/kepler-rs/hub-user-hash
              readOnly: true
            {{- end }}
      volumes:
        - name: proc
          hostPath:
            path: {{ .Values.host.procfs }}
            type: Directory
        - name: sys
          hostPath:
            path: {{ .Values.host.sysfs }}
            type: Directory
        {{- if $gpu }}
        - name: pod-resources
          hostPath:
            path: {{ .Values.gpu.podResources.hostPath }}
            type: Directory
        {{- end }}
        {{- if .Values.webConfig.enabled }}
        # The admin's Secrets (never the chart's): web-config.yml, and with TLS the certificate
        # Secret (cert-manager's tls.crt, tls.key, ca.crt). A projected volume follows their updates,
        # so a rotated certificate reaches the exporter without a restart.
        - name: web-config
          projected:
            defaultMode: 0400
            sources:
              - secret:
                  name: {{ include "kepler-rs.webConfigSecret" . }}
              {{- if $https }}
              - secret:
                  name: {{ include "kepler-rs.tlsSecret" . }}
              {{- end }}
        {{- end }}
        {{- if $hashKey }}
        - name: hub-user-hash-key
          secret:
            secretName: {{ required "kubernetes.hubUserHashKey.secretName is required with kubernetes.hubUserLabel=hash" .Values.kubernetes.hubUserHashKey.secretName }}
            defaultMode: 0400
        {{- end }}
      {{- $nodeSelector := deepCopy (default dict .Values.nodeSelector) }}
      {{- if eq $variant "gpu" }}
      {{- $_ := set $nodeSelector .Values.gpu.nodeLabel.key .Values.gpu.nodeLabel.value }}
      {{- end }}
      {{- with $nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- $affinity := deepCopy (default dict .Values.affinity) }}
      {{- if eq $variant "cpu" }}
      {{- if dig "nodeAffinity" "requiredDuringSchedulingIgnoredDuringExecution" nil $affinity }}
      {{- fail "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution cannot be combined with gpu.runtimeClassName (the chart sets it to keep the CPU DaemonSet off GPU nodes)" }}
      {{- end }}
      {{- $notGpu := dict "key" .Values.gpu.nodeLabel.key "operator" "NotIn" "values" (list .Values.gpu.nodeLabel.value) }}
      {{- $required := dict "nodeSelectorTerms" (list (dict "matchExpressions" (list $notGpu))) }}
      {{- $_ := set $affinity "nodeAffinity" (merge (dict "requiredDuringSchedulingIgnoredDuringExecution" $required) (default dict $affinity.nodeAffinity)) }}
      {{- end }}
      {{- with $affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end -}}
