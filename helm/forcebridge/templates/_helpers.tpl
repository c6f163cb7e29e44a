{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "forcebridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix; room is left for the `-source-<shard>` / `-sink` suffixes. */}}
{{- define "forcebridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "forcebridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "forcebridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "forcebridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "forcebridge.labels" -}}
helm.sh/chart: {{ include "forcebridge.chart" . }}
{{ include "forcebridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "forcebridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "forcebridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "forcebridge.secretName" -}}
{{- if .Values.secret.create }}
{{- include "forcebridge.fullname" . }}
{{- else }}
{{- required "secret.existingSecret is required when secret.create is false" .Values.secret.existingSecret }}
{{- end }}
{{- end }}

{{- define "forcebridge.jwtKeyMounted" -}}
{{- if or (and .Values.secret.create .Values.secret.jwtPrivateKey) (and (not .Values.secret.create) .Values.secret.jwtPrivateKeyFromSecret) }}true{{ end }}
{{- end }}

{{- define "forcebridge.image" -}}
{{- printf "%s:%s" (required "image.repository is required" .Values.image.repository) (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Checks the values once: shard names, one owner per channel, the drain budget.
*/}}
{{- define "forcebridge.validate" -}}
{{- $seen := dict }}
{{- $shards := dict }}
{{- if .Values.source.enabled }}
{{- if not .Values.source.shards }}
{{- fail "source.shards is empty: give at least one shard, or set source.enabled: false" }}
{{- end }}
{{- range .Values.source.shards }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?$" (toString .name)) }}
{{- fail (printf "source.shards: shard name %q must be a DNS label of at most 16 characters" (toString .name)) }}
{{- end }}
{{- if hasKey $shards .name }}
{{- fail (printf "source.shards: shard %q is defined twice" .name) }}
{{- end }}
{{- $_ := set $shards .name true }}
{{- if not .channels }}
{{- fail (printf "source.shards: shard %q has no channels" .name) }}
{{- end }}
{{- $shard := .name }}
{{- range .channels }}
{{- $channel := required (printf "source.shards: a channel of shard %q has no name" $shard) .name }}
{{- if hasKey $seen $channel }}
{{- fail (printf "source.shards: channel %s is in shards %q and %q; each channel must have exactly one owner" $channel (get $seen $channel) $shard) }}
{{- end }}
{{- $_ := set $seen $channel $shard }}
{{- end }}
{{- end }}
{{- end }}
{{- if not (or .Values.source.enabled .Values.sink.enabled) }}
{{- fail "neither source.enabled nor sink.enabled: nothing to deploy" }}
{{- end }}
{{- if lt (int .Values.terminationGraceMarginSeconds) 6 }}
{{- fail "terminationGraceMarginSeconds must be at least 6: forcebridge exits up to 5 s after drain_timeout" }}
{{- end }}
{{- end }}

{{/* The config keys common to every workload. */}}
{{- define "forcebridge.commonConfig" -}}
name: {{ .Values.name | quote }}
drain_timeout: {{ printf "%ds" (int .Values.drainTimeoutSeconds) }}
salesforce:
  login_url: {{ .Values.salesforce.loginUrl | quote }}
  pubsub_endpoint: {{ .Values.salesforce.pubsubEndpoint | quote }}
  api_version: {{ .Values.salesforce.apiVersion | quote }}
  http_timeout: {{ .Values.salesforce.httpTimeout | quote }}
  {{- with .Values.salesforce.clientTag }}
  client_tag: {{ . | quote }}
  {{- end }}
  auth:
    {{- toYaml (required "salesforce.auth is required" .Values.salesforce.auth) | nindent 4 }}
kafka:
  bootstrap_servers: {{ required "kafka.bootstrapServers is required" .Values.kafka.bootstrapServers | quote }}
  {{- with .Values.kafka.settings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ops:
  listen: {{ printf "0.0.0.0:%d" (int .Values.metrics.port) | quote }}
  {{- with .Values.metrics.settings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The config file of one source shard; called with (dict "root" $ "shard" $shard). */}}
{{- define "forcebridge.sourceConfig" -}}
{{- include "forcebridge.commonConfig" .root }}
source:
  {{- with .root.Values.source.settings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  channels:
    {{- toYaml .shard.channels | nindent 4 }}
{{- end }}

{{/* The config file of the sink. */}}
{{- define "forcebridge.sinkConfig" -}}
{{- include "forcebridge.commonConfig" . }}
sink:
  topics:
    {{- toYaml (required "sink.topics is required" .Values.sink.topics) | nindent 4 }}
  {{- if and .Values.sink.staticMembership (not (hasKey (.Values.sink.settings | default dict) "group_instance_id")) }}
  # Static group membership (KIP-345): the pod's name, from the downward API (env POD_NAME).
  group_instance_id: "${POD_NAME}"
  {{- end }}
  {{- with .Values.sink.settings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
One workload: a ConfigMap and a Deployment. Called with (dict "root" $ "component" "source" |
"sink" "suffix" "source-<shard>" | "sink" "replicas" N "strategy" "Recreate" | "RollingUpdate"
"config" <rendered config> "resources" <map>).
*/}}
{{- define "forcebridge.workload" -}}
{{- $root := .root }}
{{- $name := printf "%s-%s" (include "forcebridge.fullname" $root) .suffix }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "forcebridge.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
    forcebridge.io/workload: {{ .suffix }}
data:
  forcebridge.yaml: |
    {{- .config | nindent 4 }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "forcebridge.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
    forcebridge.io/workload: {{ .suffix }}
spec:
  replicas: {{ .replicas }}
  revisionHistoryLimit: 3
  strategy:
    type: {{ .strategy }}
  selector:
    matchLabels:
      {{- include "forcebridge.selectorLabels" $root | nindent 6 }}
      forcebridge.io/workload: {{ .suffix }}
  template:
    metadata:
      labels:
        {{- include "forcebridge.selectorLabels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
        forcebridge.io/workload: {{ .suffix }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ .config | sha256sum }}
        {{- if $root.Values.secret.create }}
        checksum/secret: {{ include "forcebridge.secretData" $root | sha256sum }}
        {{- end }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "forcebridge.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
      terminationGracePeriodSeconds: {{ add (int $root.Values.drainTimeoutSeconds) (int $root.Values.terminationGraceMarginSeconds) }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: forcebridge
          image: {{ include "forcebridge.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["run", "--config", "/etc/forcebridge/forcebridge.yaml"]
          env:
            - name: FORCEBRIDGE_LOG_FORMAT
              value: {{ $root.Values.logFormat | quote }}
            # The pod's name (downward API): the sink's `group_instance_id`.
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            {{- with $root.Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          envFrom:
            - secretRef:
                name: {{ include "forcebridge.secretName" $root }}
          ports:
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            {{- toYaml $root.Values.livenessProbe | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            {{- toYaml $root.Values.readinessProbe | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/forcebridge/forcebridge.yaml
              subPath: forcebridge.yaml
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- if include "forcebridge.jwtKeyMounted" $root }}
            - name: jwt-key
              mountPath: /etc/forcebridge/jwt
              readOnly: true
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ $name }}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if include "forcebridge.jwtKeyMounted" $root }}
        - name: jwt-key
          secret:
            secretName: {{ include "forcebridge.secretName" $root }}
            defaultMode: 0440
            items:
              - key: jwt-private-key.pem
                path: private-key.pem
        {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- if $root.Values.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "forcebridge.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  maxUnavailable: {{ $root.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "forcebridge.selectorLabels" $root | nindent 6 }}
      forcebridge.io/workload: {{ .suffix }}
{{- end }}
{{- end }}

{{/* The created Secret's stringData. */}}
{{- define "forcebridge.secretData" -}}
{{- range $k, $v := .Values.secret.env }}
{{ $k }}: {{ toString $v | quote }}
{{- end }}
{{- with .Values.secret.jwtPrivateKey }}
jwt-private-key.pem: {{ toString . | quote }}
{{- end }}
{{- end }}
